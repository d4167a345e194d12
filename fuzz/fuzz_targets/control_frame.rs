//! Fuzzes the control-frame decoder on both sides of the socket, past the
//! handshake. Whatever the bytes, the readers must return frames or typed
//! errors; a panic, a hang or a descriptor left open is a bug.
//!
//! Input: byte 0 picks the reader (bit 0 set: the agent reading procmond's
//! frames, else procmond reading an agent's). The rest is decoded twice:
//! - whole, as a `ClientFrame` and as a `ServerFrame` (the protobuf decoder
//!   alone, then validation of any task, as procmond checks it);
//! - as what the hostile peer writes after an honest handshake made by this
//!   target (layout in `peer.rs`: writes, raw or framed, with descriptors),
//!   read by `ServerChannel::recv` (tasks, cancels, status requests,
//!   goodbyes, a hash check's attached file) or `ClientChannel::recv` (task
//!   accepted or rejected, status replies, goodbyes, errors, refusals) until
//!   it returns an error.
#![no_main]

mod peer;

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use daemoneye_lib::codec::Codec;
use daemoneye_lib::control::frame::write_message;
use daemoneye_lib::control::{
    AllowList, ClientFrame, Connector, EventSource, MAX_FRAME_BYTES, PROTOCOL_VERSION, RingOffer,
    ServerFrame, accept_client, client_frame, server_frame,
};
use daemoneye_lib::proto::control::{ClientHello, ServerHello};
use daemoneye_lib::text;
use libfuzzer_sys::fuzz_target;

/// Bounds every wait; the peer's end of stream comes first.
const TIMEOUT: Duration = Duration::from_millis(500);

/// More frames than any input can hold (each takes four bytes at least).
const MAX_FRAMES: usize = 1 << 16;

fuzz_target!(|input: &[u8]| {
    let client_reads = input.first().is_some_and(|b| b & 1 != 0);
    let stream = input.get(1..).unwrap_or(&[]);
    peer::no_fd_leak(|| {
        decode_whole(stream);
        if client_reads {
            client_reads_hostile_server(stream);
        } else {
            server_reads_hostile_client(stream);
        }
    });
});

/// What procmond does with a task it read: validate it, log its text.
fn check_client_frame(body: &client_frame::Body) {
    match body {
        client_frame::Body::Hello(hello) => drop(text::for_log(&hello.client_name, 64)),
        client_frame::Body::Task(request) => {
            if let Some(task) = &request.task {
                let _ = task.validate();
            }
        }
        client_frame::Body::Cancel(cancel) => drop(text::for_log(&cancel.task_id, 64)),
        client_frame::Body::Goodbye(goodbye) => drop(text::for_log(&goodbye.reason, 64)),
        client_frame::Body::Status(_) => {}
    }
}

fn decode_whole(bytes: &[u8]) {
    let codec = Codec::new(MAX_FRAME_BYTES);
    if let Ok(ClientFrame { body: Some(body) }) = codec.decode::<ClientFrame>(bytes) {
        check_client_frame(&body);
    }
    let _ = codec.decode::<ServerFrame>(bytes);
}

fn deadline() -> Option<Instant> {
    Instant::now().checked_add(TIMEOUT)
}

fn server_reads_hostile_client(stream: &[u8]) {
    let (server_end, client_end) = UnixStream::pair().expect("socket pair");
    let hello = ClientFrame {
        body: Some(client_frame::Body::Hello(ClientHello {
            protocol_version: PROTOCOL_VERSION,
            client_name: "fuzz".into(),
        })),
    };
    write_message(&client_end, &hello, &[], deadline()).expect("hello");
    let mut fds = peer::Fds::new();
    peer::write_all(&client_end, stream, &mut fds);

    let pending = accept_client(server_end, &AllowList::new(), TIMEOUT).expect("an honest hello");
    let ring = peer::stand_in_ring();
    let offer = RingOffer {
        ring_bytes: 1 << 16,
        max_frame_bytes: 1 << 13,
        fds: &ring,
        event_source: EventSource::Connector,
    };
    let mut channel = pending.welcome(&offer).expect("welcome");
    for _ in 0..MAX_FRAMES {
        match channel.recv(deadline()) {
            Ok((body, _attached)) => check_client_frame(&body),
            Err(_) => break,
        }
    }
}

fn client_reads_hostile_server(stream: &[u8]) {
    let (server_end, client_end) = UnixStream::pair().expect("socket pair");
    let ring = peer::stand_in_ring();
    let hello = ServerFrame {
        body: Some(server_frame::Body::Hello(ServerHello {
            protocol_version: PROTOCOL_VERSION,
            ring_bytes: 1 << 16,
            max_frame_bytes: 1 << 13,
            fd_count: ring.len() as u32,
            event_source: EventSource::Connector.into(),
        })),
    };
    write_message(&server_end, &hello, &ring, deadline()).expect("hello");
    let mut fds = peer::Fds::new();
    peer::write_all(&server_end, stream, &mut fds);

    let (mut channel, welcome) = Connector::new("fuzz")
        .timeout(TIMEOUT)
        .handshake(client_end)
        .expect("an honest welcome");
    drop(welcome);
    for _ in 0..MAX_FRAMES {
        match channel.recv(deadline()) {
            Ok(server_frame::Body::Accepted(accepted)) => {
                drop(text::for_log(&accepted.task_id, 64))
            }
            Ok(server_frame::Body::Rejected(rejected)) => drop(text::for_log(&rejected.reason, 64)),
            Ok(server_frame::Body::Status(status)) => drop(text::for_log(&status.version, 64)),
            Ok(_) => {}
            Err(_) => break,
        }
    }
}
