//! The result stream through a real shared-memory ring: chunking, order,
//! END, event kinds, truncation, failures and hostile frames.

mod child_support;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use daemoneye_lib::proto::encoded::{EncodedRecord, StableFields};
use daemoneye_lib::proto::limits::MAX_PROCESSES_PER_RESULT;
use daemoneye_lib::proto::{DetectionResult, ProtoProcessRecord};
use daemoneye_lib::ring::{self, RingConfig, TryReadError};
use daemoneye_lib::session::{Chunk, RecordKind, ResultWriter, SessionError, read_chunk};

const WAIT: Duration = Duration::from_secs(10);

fn record(pid: u32) -> ProtoProcessRecord {
    ProtoProcessRecord {
        pid,
        ppid: Some(1),
        name: format!("proc-{pid}"),
        executable_path: Some(format!("/usr/bin/proc-{pid}")),
        command_line: vec![format!("proc-{pid}"), "--flag".into(), pid.to_string()],
        start_time: Some(1_700_000_000),
        memory_usage: Some(4096),
        accessible: true,
        file_exists: true,
        collection_time: 1_700_000_000_000,
        ..Default::default()
    }
}

/// Reads chunks until END.
fn read_all(consumer: &mut ring::Consumer) -> Vec<Chunk> {
    let deadline = Instant::now() + WAIT;
    let mut chunks = Vec::new();
    loop {
        let chunk = read_chunk(consumer, deadline).expect("a chunk");
        let end = chunk.marker.end;
        chunks.push(chunk);
        if end {
            return chunks;
        }
    }
}

#[test]
fn ten_thousand_records_cross_in_chunks_complete_and_in_order() {
    // A small ring (64 KiB, 8 KiB frames) so the writer must wait for the
    // reader many times over.
    let config = RingConfig::new(64 << 10).with_max_frame(8 << 10);
    let (mut producer, mut consumer) = ring::pair(&config).unwrap();
    let writer = thread::spawn(move || {
        let mut stream = ResultWriter::new(&mut producer, "task-10k", WAIT);
        for pid in 0..10_000 {
            stream.push(RecordKind::Result, record(pid)).unwrap();
        }
        stream.finish().unwrap()
    });
    let chunks = read_all(&mut consumer);
    let stats = writer.join().unwrap();

    assert!(chunks.len() > 10, "{} frames", chunks.len());
    assert_eq!(stats.frames, chunks.len() as u64);
    assert_eq!(stats.records, 10_000);
    assert_eq!(stats.truncated, 0);
    let mut got = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        assert_eq!(chunk.result.task_id, "task-10k");
        assert!(chunk.result.success);
        assert_eq!(chunk.marker.kind, RecordKind::Result);
        assert_eq!(chunk.marker.end, i == chunks.len() - 1);
        assert!(prost::Message::encoded_len(&chunk.result) <= 8 << 10);
        got.extend(chunk.result.processes.iter().cloned());
    }
    let want: Vec<_> = (0..10_000).map(record).collect();
    assert_eq!(got, want);
}

#[test]
fn kinds_never_share_a_frame_and_flush_sends_at_once() {
    let (mut producer, mut consumer) = ring::pair(&RingConfig::new(64 << 10)).unwrap();
    let mut stream = ResultWriter::new(&mut producer, "mon", WAIT);
    stream.push(RecordKind::Snapshot, record(1)).unwrap();
    stream.push(RecordKind::Snapshot, record(2)).unwrap();
    stream.push(RecordKind::Started, record(3)).unwrap();
    stream.flush().unwrap();
    // Both frames are readable before the stream ends.
    let first = read_chunk(&mut consumer, Instant::now() + WAIT).unwrap();
    let second = read_chunk(&mut consumer, Instant::now() + WAIT).unwrap();
    assert_eq!(first.marker.kind, RecordKind::Snapshot);
    assert_eq!(first.result.processes, vec![record(1), record(2)]);
    assert!(!first.marker.end);
    assert_eq!(second.marker.kind, RecordKind::Started);
    assert_eq!(second.result.processes, vec![record(3)]);
    assert!(!second.marker.end);
    stream.flush().unwrap(); // nothing pending: no frame
    stream.push(RecordKind::Exited, record(3)).unwrap();
    stream.finish().unwrap();
    let last = read_chunk(&mut consumer, Instant::now() + WAIT).unwrap();
    assert_eq!(last.marker.kind, RecordKind::Exited);
    assert!(last.marker.end);
    assert_eq!(last.result.processes, vec![record(3)]);
}

#[test]
fn records_go_into_the_ring_as_pushed_but_are_seen_only_when_their_frame_is_published() {
    let (mut producer, mut consumer) = ring::pair(&RingConfig::new(64 << 10)).unwrap();
    let max_frame = producer.max_frame();
    let mut stream = ResultWriter::new(&mut producer, "t", WAIT);
    stream.push(RecordKind::Result, record(1)).unwrap();
    let stable = Arc::new(StableFields::encode(&record(2)));
    stream
        .push_encoded(RecordKind::Result, EncodedRecord::of(stable, &record(2)))
        .unwrap();
    // The open frame is a claim: nothing of it is published yet.
    assert!(matches!(
        consumer.try_read(|_| ()),
        Err(TryReadError::Empty)
    ));
    stream.flush().unwrap();
    let first = read_chunk(&mut consumer, Instant::now() + WAIT).unwrap();
    assert_eq!(first.result.processes, vec![record(1), record(2)]);
    assert!(!first.marker.end);
    stream.push(RecordKind::Result, record(3)).unwrap();
    let stats = stream.finish().unwrap();
    assert_eq!((stats.frames, stats.records), (2, 3));
    let last = read_chunk(&mut consumer, Instant::now() + WAIT).unwrap();
    assert_eq!(last.result.processes, vec![record(3)]);
    assert!(last.marker.end);
    // Each frame claimed the largest frame but took only the bytes it used.
    assert!(
        producer.position() < max_frame as u64,
        "two small frames took {} bytes of the ring",
        producer.position()
    );
}

#[test]
fn with_no_room_for_a_largest_frame_a_record_goes_in_a_frame_of_its_own_size() {
    let config = RingConfig::new(64 << 10).with_max_frame((32 << 10) - 8);
    let (mut producer, mut consumer) = ring::pair(&config).unwrap();
    // Three unread 16 KB frames leave some 17 KiB: room for a small frame,
    // not for the largest.
    for _ in 0..3 {
        producer.try_write(&[0; 16_000], 0).unwrap();
    }
    // With a stall timeout of a minute, the writer waits only briefly for
    // the largest frame's room (10 ms a frame), not for the stall: well
    // within the 10 s it is given here.
    let (done, finished) = std::sync::mpsc::channel();
    let writer = thread::spawn(move || {
        let stats = {
            let mut stream = ResultWriter::new(&mut producer, "t", Duration::from_secs(60));
            stream.push(RecordKind::Result, record(1)).unwrap();
            stream.push(RecordKind::Result, record(2)).unwrap();
            stream.finish().unwrap()
        };
        done.send(stats).unwrap();
    });
    let stats = finished
        .recv_timeout(Duration::from_secs(10))
        .expect("the writer waited for the largest frame's room, not for a smaller frame");
    writer.join().unwrap();
    // Each record in a frame of its own (a claim of what one record needs
    // holds no second), the last marked END.
    assert_eq!((stats.records, stats.frames), (2, 2), "{stats:?}");
    for _ in 0..3 {
        consumer.try_read(|frame| frame.len()).unwrap();
    }
    let records: Vec<_> = read_all(&mut consumer)
        .into_iter()
        .flat_map(|chunk| chunk.result.processes)
        .collect();
    assert_eq!(records, vec![record(1), record(2)]);
}

#[test]
fn an_empty_stream_is_one_end_frame() {
    let (mut producer, mut consumer) = ring::pair(&RingConfig::new(64 << 10)).unwrap();
    let stats = ResultWriter::new(&mut producer, "none", WAIT)
        .finish()
        .unwrap();
    assert_eq!(stats.frames, 1);
    let chunks = read_all(&mut consumer);
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].result, DetectionResult::success("none", vec![]));
}

#[test]
fn a_record_larger_than_a_frame_loses_trailing_arguments() {
    let config = RingConfig::new(64 << 10).with_max_frame(1024);
    let (mut producer, mut consumer) = ring::pair(&config).unwrap();
    let mut big = record(7);
    big.command_line = (0..100).map(|i| format!("argument-number-{i}")).collect();
    let mut stream = ResultWriter::new(&mut producer, "big", WAIT);
    stream.push(RecordKind::Result, big.clone()).unwrap();
    let stats = stream.finish().unwrap();
    assert_eq!(stats.truncated, 1);
    let chunks = read_all(&mut consumer);
    let got = &chunks[0].result.processes[0];
    assert!(got.command_line.len() < 100 && !got.command_line.is_empty());
    let n = got.command_line.len();
    assert_eq!(got.command_line[..], big.command_line[..n]);
    // Only as many arguments as must go: one more would not fit.
    let len = |args: usize| {
        let mut r = big.clone();
        r.command_line.truncate(args);
        prost::Message::encoded_len(&DetectionResult {
            processes: vec![r],
            ..DetectionResult::success("big", vec![])
        })
    };
    assert!(len(n) <= 1024 && len(n + 1) > 1024, "{n} arguments kept");
    assert_eq!(got.name, big.name);
}

#[test]
fn a_record_that_cannot_fit_fails_with_its_pid() {
    let config = RingConfig::new(64 << 10).with_max_frame(64);
    let (mut producer, _consumer) = ring::pair(&config).unwrap();
    let mut huge = record(9);
    huge.executable_path = Some("/x".repeat(100));
    let mut stream = ResultWriter::new(&mut producer, "huge", WAIT);
    let mut bare = huge.clone();
    bare.command_line.clear();
    let needed = prost::Message::encoded_len(&DetectionResult {
        processes: vec![bare],
        ..DetectionResult::success("huge", vec![])
    });
    let err = stream.push(RecordKind::Result, huge).unwrap_err();
    assert!(
        matches!(
            err,
            SessionError::RecordTooLarge {
                pid: 9,
                max: 64,
                len,
            } if len == needed
        ),
        "{err}"
    );
}

#[test]
fn a_failure_ends_the_stream_and_drops_pending_records() {
    let (mut producer, mut consumer) = ring::pair(&RingConfig::new(64 << 10)).unwrap();
    let mut stream = ResultWriter::new(&mut producer, "bad", WAIT);
    stream.push(RecordKind::Result, record(1)).unwrap();
    // Over the 4 KiB error message limit, byte 4096 inside an "é".
    let long = format!("a{}", "é".repeat(5000));
    let stats = stream.fail(&long).unwrap();
    assert!(stats.failed);
    let chunks = read_all(&mut consumer);
    assert_eq!(chunks.len(), 1);
    let result = &chunks[0].result;
    assert!(!result.success);
    assert!(result.processes.is_empty());
    let message = result.error_message.as_deref().unwrap();
    assert_eq!(message.len(), 4095, "cut at the last whole character");
    assert!(long.starts_with(message));
}

#[test]
fn hostile_frames_are_named_errors() {
    let (mut producer, mut consumer) = ring::pair(&RingConfig::new(64 << 10)).unwrap();
    let deadline = Instant::now() + WAIT;
    // Reserved flag bits.
    producer
        .encode(&DetectionResult::success("t", vec![]), 0x0100, deadline)
        .unwrap();
    // Not protobuf.
    producer.write(&[0xff, 0xff, 0xff], 1, deadline).unwrap();
    // Valid protobuf breaking the rules: a failure that says nothing.
    producer
        .encode(&DetectionResult::failure("t", ""), 1, deadline)
        .unwrap();
    let errors: Vec<_> = (0..3)
        .map(|_| read_chunk(&mut consumer, deadline).unwrap_err())
        .collect();
    assert!(
        matches!(errors[0], SessionError::BadFlags { flags: 0x0100 }),
        "{}",
        errors[0]
    );
    assert!(
        matches!(errors[1], SessionError::Decode(_)),
        "{}",
        errors[1]
    );
    assert!(
        matches!(errors[2], SessionError::Invalid(_)),
        "{}",
        errors[2]
    );
    assert!(
        errors[2].to_string().contains("error_message"),
        "{}",
        errors[2]
    );
}

#[test]
fn a_frame_of_too_many_tiny_records_is_refused_at_the_limit() {
    let (mut producer, mut consumer) =
        ring::pair(&RingConfig::new(1 << 20).with_max_frame(256 << 10)).unwrap();
    let deadline = Instant::now() + WAIT;
    // task_id "t", then 65,537 empty records of 2 bytes each (field 4,
    // length 0): 128 KiB on the wire, some 16 MiB decoded.
    let mut bytes = vec![0x0a, 0x01, b't'];
    for _ in 0..=MAX_PROCESSES_PER_RESULT {
        bytes.extend_from_slice(&[0x22, 0x00]);
    }
    producer.write(&bytes, 0, deadline).unwrap();
    let err = read_chunk(&mut consumer, deadline).unwrap_err();
    assert!(
        matches!(err, SessionError::TooManyRecords { count, max }
            if count == MAX_PROCESSES_PER_RESULT + 1 && max == MAX_PROCESSES_PER_RESULT),
        "{err}"
    );
}

#[test]
fn closing_the_ring_ends_a_writer_that_waits_for_room() {
    // The reader never reads, so the writer fills the ring and waits; closing
    // the ring from another thread ends the stream with `Closed`, not after
    // the 60 s stall bound (the test's harness timeout would catch that).
    let config = RingConfig::new(64 << 10).with_max_frame(8 << 10);
    let (mut producer, consumer) = ring::pair(&config).unwrap();
    let closer = consumer.closer();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let writer = thread::spawn(move || {
        tid_tx
            .send(rustix::thread::gettid().as_raw_nonzero().get())
            .unwrap();
        let mut stream = ResultWriter::new(&mut producer, "stuck", Duration::from_secs(60));
        (0..100_000).try_for_each(|pid| stream.push(RecordKind::Result, record(pid)))
    });
    // Close only once the writer sleeps waiting for room (its futex wait:
    // nothing else in it sleeps); the kernel's view in /proc is the only
    // signal of that.
    let tid = tid_rx.recv_timeout(WAIT).unwrap();
    child_support::wait_for_state(
        &format!("/proc/self/task/{tid}/stat"),
        'S',
        WAIT,
        "the writer never waited for room",
    );
    closer.close();
    let result = writer.join().unwrap();
    assert!(
        matches!(result, Err(SessionError::Ring(ring::RingError::Closed))),
        "{result:?}"
    );
    drop(consumer);
}

#[test]
fn finish_with_sends_a_whole_result_as_the_end_frame() {
    use daemoneye_lib::proto::ProtoHashResult;
    let (mut producer, mut consumer) = ring::pair(&RingConfig::new(64 << 10)).unwrap();
    let mut result = DetectionResult::success("hash", vec![]);
    result.hash_result = Some(ProtoHashResult {
        hash_value: "ab".repeat(32),
        algorithm: "sha256".into(),
        file_path: "/bin/sh".into(),
        success: true,
        error_message: None,
    });
    let mut stream = ResultWriter::new(&mut producer, "hash", WAIT);
    stream.push(RecordKind::Result, record(1)).unwrap(); // dropped
    stream.finish_with(result.clone()).unwrap();
    let chunks = read_all(&mut consumer);
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].result, result);
}

/// A record of `pid` whose field in a result is `len` bytes (its name
/// padded), if one is.
fn record_of_len(pid: u32, len: usize) -> Option<ProtoProcessRecord> {
    (0..len).find_map(|pad| {
        let mut r = record(pid);
        r.name.push_str(&"x".repeat(pad));
        let field = prost::Message::encoded_len(&DetectionResult {
            processes: vec![r.clone()],
            ..Default::default()
        });
        (field == len).then_some(r)
    })
}

#[test]
fn a_record_that_ends_exactly_at_the_largest_frame_shares_it_and_one_byte_more_does_not() {
    const MAX: usize = 1024;
    let head = prost::Message::encoded_len(&DetectionResult::success("exact", vec![]));
    let field = |r: &ProtoProcessRecord| {
        prost::Message::encoded_len(&DetectionResult {
            processes: vec![r.clone()],
            ..Default::default()
        })
    };
    let firsts: Vec<_> = (1..=5).map(record).collect();
    let used = head + firsts.iter().map(field).sum::<usize>();
    for encoded in [false, true] {
        for (extra, frames) in [(0, 1), (1, 2)] {
            let last = record_of_len(9, MAX - used + extra).expect("a padded record");
            let config = RingConfig::new(64 << 10).with_max_frame(MAX);
            let (mut producer, mut consumer) = ring::pair(&config).unwrap();
            let mut stream = ResultWriter::new(&mut producer, "exact", WAIT);
            for r in firsts.iter().chain([&last]) {
                if encoded {
                    let stable = Arc::new(StableFields::encode(r));
                    let record = EncodedRecord::of(stable, r);
                    stream.push_encoded(RecordKind::Result, record).unwrap();
                } else {
                    stream.push(RecordKind::Result, r.clone()).unwrap();
                }
            }
            let stats = stream.finish().unwrap();
            let chunks = read_all(&mut consumer);
            let what = format!("encoded {encoded}, {extra} byte(s) over");
            assert_eq!(chunks.len(), frames, "{what}");
            assert_eq!(stats.frames, frames as u64, "{what}");
            assert_eq!(stats.truncated, 0, "{what}");
            let got: Vec<_> = chunks
                .iter()
                .flat_map(|c| c.result.processes.clone())
                .collect();
            let want: Vec<_> = firsts.iter().chain([&last]).cloned().collect();
            assert_eq!(got, want, "{what}");
            if extra == 0 {
                assert_eq!(prost::Message::encoded_len(&chunks[0].result), MAX);
            }
        }
        // A record that fills a frame alone is not cut, one byte more is.
        for (extra, truncated) in [(0, 0), (1, 1)] {
            let alone = record_of_len(9, MAX - head + extra).expect("a padded record");
            let config = RingConfig::new(64 << 10).with_max_frame(MAX);
            let (mut producer, mut consumer) = ring::pair(&config).unwrap();
            let mut stream = ResultWriter::new(&mut producer, "exact", WAIT);
            if encoded {
                let stable = Arc::new(StableFields::encode(&alone));
                let record = EncodedRecord::of(stable, &alone);
                stream.push_encoded(RecordKind::Result, record).unwrap();
            } else {
                stream.push(RecordKind::Result, alone.clone()).unwrap();
            }
            let stats = stream.finish().unwrap();
            assert_eq!(
                stats.truncated, truncated,
                "encoded {encoded}, {extra} over"
            );
            let chunks = read_all(&mut consumer);
            assert_eq!(chunks.len(), 1);
            let got = &chunks[0].result.processes[0];
            assert_eq!(
                got.command_line.len() == alone.command_line.len(),
                extra == 0
            );
        }
    }
}

#[test]
fn a_stream_says_its_task_marks_its_frames_full_and_sees_its_ring_closed() {
    let (mut producer, mut consumer) = ring::pair(&RingConfig::new(64 << 10)).unwrap();
    let mut stream = ResultWriter::new(&mut producer, "full-task", WAIT);
    assert_eq!(stream.task_id(), "full-task");
    assert!(!stream.is_closed());
    stream.mark_full();
    stream.push(RecordKind::Snapshot, record(1)).unwrap();
    stream.flush().unwrap();
    stream.push(RecordKind::Snapshot, record(2)).unwrap();
    stream.finish().unwrap();
    let chunks = read_all(&mut consumer);
    assert_eq!(chunks.len(), 2);
    assert!(chunks.iter().all(|c| c.marker.full), "{chunks:?}");

    let (mut producer, mut consumer) = ring::pair(&RingConfig::new(64 << 10)).unwrap();
    let mut stream = ResultWriter::new(&mut producer, "plain", WAIT);
    stream.push(RecordKind::Snapshot, record(1)).unwrap();
    assert!(!stream.is_closed(), "a frame open, the ring open");
    consumer.close();
    assert!(stream.is_closed(), "the reader closed the ring");
}

#[test]
fn a_frame_holds_at_most_the_schemas_records_and_the_next_goes_in_another() {
    let config = RingConfig::new(4 << 20).with_max_frame(1 << 20);
    let (mut producer, mut consumer) = ring::pair(&config).unwrap();
    let writer = thread::spawn(move || {
        let mut stream = ResultWriter::new(&mut producer, "many", WAIT);
        for pid in 0..=MAX_PROCESSES_PER_RESULT as u32 {
            let tiny = ProtoProcessRecord {
                pid,
                ..Default::default()
            };
            stream.push(RecordKind::Result, tiny).unwrap();
        }
        stream.finish().unwrap()
    });
    let chunks = read_all(&mut consumer);
    writer.join().unwrap();
    let counts: Vec<_> = chunks.iter().map(|c| c.result.processes.len()).collect();
    assert_eq!(counts, [MAX_PROCESSES_PER_RESULT, 1]);
}

#[test]
fn a_cancelled_stream_ends_failed_and_marked_and_a_whole_result_says_whether_it_failed() {
    let (mut producer, mut consumer) = ring::pair(&RingConfig::new(64 << 10)).unwrap();
    let mut stream = ResultWriter::new(&mut producer, "gone", WAIT);
    stream.push(RecordKind::Result, record(1)).unwrap();
    let stats = stream.cancelled("cancelled by the client").unwrap();
    assert!(stats.failed);
    let chunks = read_all(&mut consumer);
    assert_eq!(chunks.len(), 1);
    assert!(chunks[0].marker.cancelled && chunks[0].marker.end);
    assert!(!chunks[0].result.success);
    assert_eq!(
        chunks[0].result.error_message.as_deref(),
        Some("cancelled by the client")
    );

    const MAX: usize = 1024;
    for (success, extra) in [(true, 0), (false, 0), (true, 1)] {
        let config = RingConfig::new(64 << 10).with_max_frame(MAX);
        let (mut producer, mut consumer) = ring::pair(&config).unwrap();
        let stream = ResultWriter::new(&mut producer, "whole", WAIT);
        let mut result = if success {
            DetectionResult::success("whole", vec![])
        } else {
            DetectionResult::failure("whole", String::new())
        };
        // Padded to MAX (+ extra) bytes with an error message.
        let pad = (0..MAX).find(|&n| {
            let mut padded = result.clone();
            padded.error_message = Some("e".repeat(n));
            prost::Message::encoded_len(&padded) == MAX + extra
        });
        result.error_message = Some("e".repeat(pad.expect("a padding")));
        match stream.finish_with(result) {
            Ok(stats) => {
                assert_eq!(extra, 0);
                assert_eq!(stats.failed, !success);
                let chunks = read_all(&mut consumer);
                assert_eq!(chunks[0].result.success, success);
                assert!(!chunks[0].marker.cancelled);
            }
            Err(err) => {
                assert_eq!(extra, 1, "{err}");
                assert!(
                    matches!(err, SessionError::ResultTooLarge { len, max: MAX } if len == MAX + 1),
                    "{err}"
                );
            }
        }
    }
}

#[test]
fn a_frame_that_needs_all_it_asks_for_waits_out_a_lagging_reader() {
    let (mut producer, mut consumer) = ring::pair(&RingConfig::new(64 << 10)).unwrap();
    // Fill the ring: not even an empty END frame fits.
    let mut filled = 0;
    for size in [1000, 64, 1] {
        while producer.try_write(&vec![0; size], 0).is_ok() {
            filled += 1;
            assert!(filled < 5000, "a 64 KiB ring holds fewer frames");
        }
    }
    let writer = thread::spawn(move || {
        let stream = ResultWriter::new(&mut producer, "late", Duration::from_secs(60));
        stream.finish()
    });
    // The reader lags far longer than the 10 ms a writer gives the largest
    // frame: an END frame needs exactly what it asks for, so it waits on,
    // up to the stall timeout.
    thread::sleep(Duration::from_millis(300));
    for _ in 0..filled {
        consumer.try_read(|frame| frame.len()).unwrap();
    }
    let chunks = read_all(&mut consumer);
    assert_eq!(chunks.len(), 1);
    assert!(chunks[0].result.processes.is_empty());
    let stats = writer.join().unwrap().expect("the writer waited for room");
    assert_eq!(stats.frames, 1);
}
