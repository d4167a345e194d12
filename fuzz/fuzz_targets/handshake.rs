//! Fuzzes the opening exchange on both sides, over a real socket pair, with
//! the input as what the hostile peer writes first (its hello, or anything
//! else) and the descriptors it attaches. Whatever it sends, each side must
//! end with a typed error or a valid handshake; a panic, a hang or a
//! descriptor left open is a bug.
//!
//! Input: byte 0 picks the side (bit 0 set: the agent's `Connector` reading
//! a hostile procmond's welcome, else procmond's `accept_client` reading a
//! hostile agent's hello) and, for the agent's side, when the hostile
//! procmond writes (bit 1 set: before the agent's hello, where only a
//! refusal is heard; else as a procmond does, once the hello came); the
//! rest is the peer's writes (layout in
//! `peer.rs`: raw or framed bytes, 0 to 31 descriptors of five kinds on
//! each, a real ring's two among them).
//!
//! After a handshake that succeeds, the side goes on as the real one does:
//! procmond logs the client's name, welcomes it with a ring's descriptors
//! and reads its first frame; the agent takes exactly two descriptors and
//! attaches the ring (`Consumer::attach`, which must refuse anything but a
//! sealed ring of the right shape).
#![no_main]

mod peer;

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use daemoneye_lib::control::{AllowList, Connector, EventSource, RingOffer, accept_client};
use daemoneye_lib::ring::{Consumer, ConsumerFds, WaitStrategy};
use daemoneye_lib::text;
use libfuzzer_sys::fuzz_target;

/// Bounds every wait; the peer's end of stream comes first.
const TIMEOUT: Duration = Duration::from_millis(500);

fuzz_target!(|input: &[u8]| {
    let client_side = input.first().is_some_and(|b| b & 1 != 0);
    let speaks_first = input.first().is_some_and(|b| b & 2 != 0);
    let stream = input.get(1..).unwrap_or(&[]);
    peer::no_fd_leak(|| {
        if client_side {
            connector_reads_hostile_server(stream, speaks_first);
        } else {
            acceptor_reads_hostile_client(stream);
        }
    });
});

fn acceptor_reads_hostile_client(stream: &[u8]) {
    let (server_end, client_end) = UnixStream::pair().expect("socket pair");
    let mut fds = peer::Fds::new();
    peer::write_all(&client_end, stream, &mut fds);
    let Ok(pending) = accept_client(server_end, &AllowList::new(), TIMEOUT) else {
        return;
    };
    drop(text::for_log(pending.client_name(), 64));
    let ring = peer::stand_in_ring();
    let offer = RingOffer {
        ring_bytes: 1 << 16,
        max_frame_bytes: 1 << 13,
        fds: &ring,
        event_source: EventSource::Polling,
    };
    let Ok(mut channel) = pending.welcome(&offer) else {
        return;
    };
    let _ = channel.recv(Instant::now().checked_add(TIMEOUT));
}

fn connector_reads_hostile_server(stream: &[u8], speaks_first: bool) {
    let (server_end, client_end) = UnixStream::pair().expect("socket pair");
    let writes = stream.to_vec();
    let server = std::thread::spawn(move || {
        if !speaks_first {
            // The client's hello first, as a procmond reads it.
            let _ = server_end.set_read_timeout(Some(TIMEOUT));
            let _ = std::io::Read::read(&mut &server_end, &mut [0u8; 4096]);
        }
        let mut fds = peer::Fds::new();
        peer::write_all(&server_end, &writes, &mut fds);
        server_end
    });
    let connector = Connector::new("fuzz").timeout(TIMEOUT);
    let (handshake, _server_end) = if speaks_first {
        // Its bytes are waiting before the handshake begins.
        let server_end = server.join().expect("the hostile server's thread");
        (connector.handshake(client_end), server_end)
    } else {
        let handshake = connector.handshake(client_end);
        (
            handshake,
            server.join().expect("the hostile server's thread"),
        )
    };
    let Ok((_channel, welcome)) = handshake else {
        return;
    };
    let Ok::<[_; 2], _>([data, control]) = welcome.fds.try_into() else {
        return;
    };
    if let Ok(consumer) = Consumer::attach(ConsumerFds { data, control }, WaitStrategy::BusySpin) {
        std::hint::black_box(consumer.max_frame());
    }
}
