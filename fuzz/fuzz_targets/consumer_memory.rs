//! Fuzzes the consumer's parsing of ring memory: the input becomes the
//! producer region (header, producer position, frames) and the consumer
//! position of a ring, and the consumer attaches to it and reads. Whatever
//! the bytes, it must only hand out frames within bounds or return errors;
//! a panic, a hang or an out-of-bounds access is a bug.
//!
//! Input layout (missing bytes read as zero):
//! - byte 0: bit 0 set = take the header raw from the input, else write a
//!   valid one (so most inputs get past `attach`);
//! - bytes 1..3: the largest frame, for a valid header;
//! - bytes 3..11: producer position; 11..19: consumer position;
//!   19..27: a second producer position, stored half-way through;
//! - bytes 27..91: the raw header, when bit 0 asks for it;
//! - the rest: the data area, from the consumer position's place on
//!   (wrapping), so the consumer's first frames are fuzz bytes.
#![no_main]

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;

use daemoneye_lib::ring::layout::{
    CAPACITY_OFFSET, CONSUMER_POSITION_OFFSET, CONTROL_LEN, DATA_OFFSET, DATA_OFFSET_OFFSET,
    LAYOUT_VERSION, MAGIC, MAGIC_OFFSET, MAX_FRAME_OFFSET, MIN_CAPACITY, PRODUCER_POSITION_OFFSET,
    VERSION_OFFSET, data_region_len, max_frame_limit,
};
use daemoneye_lib::ring::{Consumer, ConsumerFds, WaitStrategy};
use daemoneye_lib::sys::memfd::{self, Seals};
use libfuzzer_sys::fuzz_target;

const CAP: usize = MIN_CAPACITY;

fn bytes_at(input: &[u8], from: usize, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    if from < input.len() {
        let n = len.min(input.len() - from);
        out[..n].copy_from_slice(&input[from..from + n]);
    }
    out
}

fn u64_at(input: &[u8], from: usize) -> u64 {
    u64::from_le_bytes(bytes_at(input, from, 8).try_into().unwrap())
}

/// A memfd of `len` bytes, and a handle to write it with.
fn region(len: usize) -> (OwnedFd, File) {
    let fd = memfd::create("daemoneye-ring-fuzz", len as u64).expect("memfd");
    let file = File::from(fd.try_clone().expect("dup"));
    (fd, file)
}

fuzz_target!(|input: &[u8]| {
    let flags = input.first().copied().unwrap_or(0);
    let max_frame = usize::from(u16::from_le_bytes(
        bytes_at(input, 1, 2).try_into().unwrap(),
    ))
    .clamp(1, max_frame_limit(CAP));
    let producer_pos = u64_at(input, 3);
    let consumer_pos = u64_at(input, 11);
    let later_producer_pos = u64_at(input, 19);

    let data_len = data_region_len(CAP);
    let (data, data_file) = region(data_len);
    let (control, control_file) = region(CONTROL_LEN);
    if flags & 1 != 0 {
        data_file.write_all_at(&bytes_at(input, 27, 64), 0).unwrap();
    } else {
        let put = |at: usize, bytes: &[u8]| data_file.write_all_at(bytes, at as u64).unwrap();
        put(MAGIC_OFFSET, &MAGIC.to_ne_bytes());
        put(VERSION_OFFSET, &LAYOUT_VERSION.to_ne_bytes());
        put(DATA_OFFSET_OFFSET, &(DATA_OFFSET as u32).to_ne_bytes());
        put(CAPACITY_OFFSET, &(CAP as u64).to_ne_bytes());
        put(MAX_FRAME_OFFSET, &(max_frame as u64).to_ne_bytes());
    }
    data_file
        .write_all_at(&producer_pos.to_ne_bytes(), PRODUCER_POSITION_OFFSET as u64)
        .unwrap();
    let frames = input.get(91..).unwrap_or(&[]);
    let start = (consumer_pos as usize) & (CAP - 1);
    let first = frames.len().min(CAP - start);
    data_file
        .write_all_at(&frames[..first], (DATA_OFFSET + start) as u64)
        .unwrap();
    let rest = (frames.len() - first).min(start);
    data_file
        .write_all_at(&frames[first..first + rest], DATA_OFFSET as u64)
        .unwrap();
    control_file
        .write_all_at(&consumer_pos.to_ne_bytes(), CONSUMER_POSITION_OFFSET as u64)
        .unwrap();
    memfd::add_seals(&data, Seals::SHRINK | Seals::GROW).unwrap();
    memfd::add_seals(&control, Seals::SHRINK | Seals::GROW).unwrap();

    let fds = ConsumerFds {
        data: data,
        control: control,
    };
    let Ok(mut consumer) = Consumer::attach(fds, WaitStrategy::BusySpin) else {
        return;
    };
    let max = consumer.max_frame();
    let mut sum = 0u64;
    // Read until an error (Empty, Closed or Corrupt), then let the producer
    // position jump and read again.
    for phase in 0..2 {
        if phase == 1 {
            data_file
                .write_all_at(
                    &later_producer_pos.to_ne_bytes(),
                    PRODUCER_POSITION_OFFSET as u64,
                )
                .unwrap();
        }
        for _ in 0..64 {
            let got = consumer.try_read_batch(4, |frame| {
                assert!(frame.bytes().len() <= max, "frame longer than the largest");
                // Touch every byte, as a real reader would.
                sum = frame
                    .bytes()
                    .iter()
                    .fold(sum, |s, &b| s.wrapping_add(u64::from(b)));
            });
            if got.is_err() {
                break;
            }
        }
    }
    std::hint::black_box(sum);
});
