//! The two-process harness shared by `benches/ring.rs` and
//! `examples/ipc_bench.rs`: a peer process (the same binary, re-executed
//! with `IPC_BENCH_ROLE` set) that echoes frames back or sinks them, over a
//! pair of rings or over a Unix stream socket with the same framing.
//!
//! - **Ring**: frames go out on a ring this process creates and come back
//!   (echo) on a ring the peer creates; the descriptors cross the control
//!   socket with `SCM_RIGHTS`. Every end uses the same [`WaitStrategy`].
//! - **Unix socket**: one stream socket pair; a frame is an 8-byte
//!   little-endian length, like the ring's 8-byte frame header, then the
//!   payload, sent with one `write` per frame (a daemon sends each result as
//!   it is ready); the reader reads through a 64 KiB buffer.
//!
//! In every case the reader copies each frame out into its own buffer
//! (touching every byte) before it counts or echoes it. The peer is started
//! outside any timing.
#![allow(dead_code)] // the bench and the example use different parts

use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use daemoneye_lib::ring::{Consumer, ConsumerFds, Producer, RingConfig, RingError, WaitStrategy};
use daemoneye_lib::sys::pidfd::PidFd;
use daemoneye_lib::sys::socket::{recv_with_fds, send_with_fds};

/// Bytes in each ring's data area; the `memcpy` rows copy out of a buffer
/// this large.
pub const RING_CAPACITY: usize = 1 << 20;
/// The largest frame either transport carries.
pub const MAX_FRAME: usize = 64 << 10;
/// Frame sizes measured.
pub const SIZES: [usize; 4] = [64, 1024, 16 << 10, 64 << 10];
/// Most frames a sink reads (and the ring releases) at once.
const BATCH: u64 = 64;
const ROLE_VAR: &str = "IPC_BENCH_ROLE";
const TRANSPORT_VAR: &str = "IPC_BENCH_TRANSPORT";
/// A bound on every blocking call, so a dead peer fails a run instead of
/// hanging it.
const DEADLINE: Duration = Duration::from_secs(60);

/// What carries the frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Ring(WaitStrategy),
    Uds,
}

impl Transport {
    /// Every transport measured: the ring with each strategy, then the
    /// socket.
    pub fn all() -> [Transport; 4] {
        [
            Transport::Ring(WaitStrategy::BusySpin),
            Transport::Ring(WaitStrategy::default()),
            Transport::Ring(park()),
            Transport::Uds,
        ]
    }

    /// `"ring"` or `"uds"`.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Ring(_) => "ring",
            Transport::Uds => "uds",
        }
    }

    /// The wait strategy's name, `"none"` for the socket.
    pub fn strategy(self) -> &'static str {
        match self {
            Transport::Ring(WaitStrategy::BusySpin) => "busy-spin",
            Transport::Ring(WaitStrategy::SpinThenPark { .. }) => "spin-then-park",
            Transport::Ring(WaitStrategy::Park { .. }) => "park",
            Transport::Uds => "none",
        }
    }

    fn parse(text: &str) -> Option<Transport> {
        Transport::all()
            .into_iter()
            .find(|t| format!("{}:{}", t.name(), t.strategy()) == text)
    }
}

/// Park at once, with the default timeout.
pub fn park() -> WaitStrategy {
    WaitStrategy::Park {
        timeout: daemoneye_lib::ring::DEFAULT_PARK_TIMEOUT,
    }
}

/// What the peer does with each frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Sends it straight back.
    Echo,
    /// Counts it; acknowledges each announced batch once it has read it all.
    Sink,
}

fn ring_config(strategy: WaitStrategy) -> RingConfig {
    RingConfig::new(RING_CAPACITY)
        .with_max_frame(MAX_FRAME)
        .with_wait(strategy)
}

/// The deadline handed to each blocking ring call: about [`DEADLINE`] from
/// now, re-read from the clock only every [`DEADLINE_REUSE`] calls. A clock
/// read costs about 30 ns here, a tenth of a ring hand-off: taken on every
/// call it would be timed as part of the transport (the socket's blocking
/// calls read no clock).
struct Deadline {
    at: Instant,
    uses_left: u32,
}

/// Calls that share one clock read; each still waits at most `DEADLINE`
/// past the read, so a dead peer fails a run within a minute or so.
const DEADLINE_REUSE: u32 = 1024;

impl Deadline {
    fn new() -> Deadline {
        Deadline {
            at: Instant::now() + DEADLINE,
            uses_left: DEADLINE_REUSE,
        }
    }

    fn get(&mut self) -> Instant {
        if self.uses_left == 0 {
            *self = Deadline::new();
        }
        self.uses_left -= 1;
        self.at
    }
}

/// One direction of frames, either transport.
enum Sender {
    Ring(Producer, Deadline),
    Uds { stream: UnixStream, buf: Vec<u8> },
}

enum Receiver {
    Ring(Consumer, Deadline),
    Uds(BufReader<UnixStream>),
}

impl Sender {
    fn send(&mut self, payload: &[u8]) -> io::Result<()> {
        match self {
            Sender::Ring(producer, deadline) => producer
                .write(payload, 0, deadline.get())
                .map_err(io::Error::other),
            Sender::Uds { stream, buf } => {
                buf.clear();
                buf.extend_from_slice(&(payload.len() as u64).to_le_bytes());
                buf.extend_from_slice(payload);
                stream.write_all(buf)
            }
        }
    }
}

impl Receiver {
    /// Copies up to `max` frames, at least one, into `out` one after the
    /// other (each overwriting the last, as a reader that handles a frame
    /// and moves on); returns how many, or `None` once the sender has
    /// closed. The ring releases them with one position store
    /// (`read_batch`); the socket reads through its buffer.
    fn recv_many(&mut self, out: &mut [u8], max: u64) -> io::Result<Option<u64>> {
        match self {
            Receiver::Ring(consumer, deadline) => {
                let got = consumer.read_batch(max as usize, deadline.get(), |frame| {
                    let bytes = frame.bytes();
                    out[..bytes.len()].copy_from_slice(bytes);
                });
                match got {
                    Ok(n) => Ok(Some(n as u64)),
                    Err(RingError::Closed | RingError::PeerGone) => Ok(None),
                    Err(err) => Err(io::Error::other(err)),
                }
            }
            Receiver::Uds(reader) => {
                let mut n = 0;
                // Whatever is already buffered, without another system call.
                while n < max && (n == 0 || reader.buffer().len() >= 8) {
                    match recv_uds(reader, out)? {
                        Some(_) => n += 1,
                        None if n == 0 => return Ok(None),
                        None => break,
                    }
                }
                Ok(Some(n))
            }
        }
    }

    /// Copies the next frame into `out`; returns its length, or `None` once
    /// the sender has closed.
    fn recv(&mut self, out: &mut [u8]) -> io::Result<Option<usize>> {
        match self {
            Receiver::Ring(consumer, deadline) => {
                let got = consumer.read(deadline.get(), |frame| {
                    let bytes = frame.bytes();
                    out[..bytes.len()].copy_from_slice(bytes);
                    bytes.len()
                });
                match got {
                    Ok(len) => Ok(Some(len)),
                    Err(RingError::Closed | RingError::PeerGone) => Ok(None),
                    Err(err) => Err(io::Error::other(err)),
                }
            }
            Receiver::Uds(reader) => recv_uds(reader, out),
        }
    }
}

/// Reads one length-prefixed frame from the socket into `out`.
fn recv_uds(reader: &mut BufReader<UnixStream>, out: &mut [u8]) -> io::Result<Option<usize>> {
    let mut header = [0u8; 8];
    match reader.read_exact(&mut header) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(err) => return Err(err),
    }
    let len = u64::from_le_bytes(header) as usize;
    if len > out.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes"),
        ));
    }
    reader.read_exact(&mut out[..len])?;
    Ok(Some(len))
}

fn send_fds(control: &UnixStream, fds: &[std::os::fd::BorrowedFd<'_>]) -> io::Result<()> {
    send_with_fds(control, b"F", fds).map(|_| ())
}

fn recv_fds(control: &UnixStream, count: usize) -> io::Result<Vec<OwnedFd>> {
    let mut byte = [0u8; 1];
    let (n, fds) = recv_with_fds(control, &mut byte, count)?;
    if n != 1 || fds.len() != count {
        return Err(io::Error::other("bad descriptor message"));
    }
    Ok(fds)
}

fn ring_fds(fds: Vec<OwnedFd>) -> ConsumerFds {
    let mut fds = fds.into_iter();
    let data = fds.next().expect("two descriptors");
    let control = fds.next().expect("two descriptors");
    ConsumerFds { data, control }
}

fn write_u64(control: &mut UnixStream, value: u64) -> io::Result<()> {
    control.write_all(&value.to_le_bytes())
}

fn read_u64(control: &mut UnixStream) -> io::Result<u64> {
    let mut bytes = [0u8; 8];
    control.read_exact(&mut bytes)?;
    Ok(u64::from_le_bytes(bytes))
}

/// A running peer and the link to it.
pub struct Session {
    child: Child,
    pidfd: PidFd,
    control: UnixStream,
    tx: Option<Sender>,
    rx: Option<Receiver>,
    scratch: Vec<u8>,
}

impl Session {
    /// Starts the peer (this binary again) and connects to it.
    pub fn start(transport: Transport, mode: Mode) -> io::Result<Session> {
        let (mut control, theirs) = UnixStream::pair()?;
        control.set_read_timeout(Some(DEADLINE))?;
        let role = match mode {
            Mode::Echo => "echo",
            Mode::Sink => "sink",
        };
        let child = Command::new(std::env::current_exe()?)
            .env(ROLE_VAR, role)
            .env(
                TRANSPORT_VAR,
                format!("{}:{}", transport.name(), transport.strategy()),
            )
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .spawn()?;
        let pidfd = PidFd::open(child.id())?;
        let (tx, rx) = match transport {
            Transport::Ring(strategy) => {
                let (producer, fds) =
                    Producer::create(&ring_config(strategy)).map_err(io::Error::other)?;
                send_fds(&control, &[fds.data.as_fd(), fds.control.as_fd()])?;
                let rx = if mode == Mode::Echo {
                    let fds = ring_fds(recv_fds(&control, 2)?);
                    let consumer = Consumer::attach(fds, strategy).map_err(io::Error::other)?;
                    Some(Receiver::Ring(consumer, Deadline::new()))
                } else {
                    None
                };
                (Sender::Ring(producer, Deadline::new()), rx)
            }
            Transport::Uds => {
                let (ours, theirs) = UnixStream::pair()?;
                send_fds(&control, &[theirs.as_fd()])?;
                let rx = (mode == Mode::Echo).then(|| {
                    Receiver::Uds(BufReader::with_capacity(
                        64 << 10,
                        ours.try_clone().expect("dup socket"),
                    ))
                });
                let tx = Sender::Uds {
                    stream: ours,
                    buf: Vec::with_capacity(MAX_FRAME + 8),
                };
                (tx, rx)
            }
        };
        // The peer says it is ready once its ends are attached.
        let ready = read_u64(&mut control)?;
        if ready != 1 {
            return Err(io::Error::other("peer not ready"));
        }
        Ok(Session {
            child,
            pidfd,
            control,
            tx: Some(tx),
            rx,
            scratch: vec![0; MAX_FRAME],
        })
    }

    /// Sends `payload` and waits for it to come back (echo mode); the echo
    /// is copied out in full.
    pub fn round_trip(&mut self, payload: &[u8]) -> io::Result<()> {
        self.tx.as_mut().expect("sender").send(payload)?;
        let rx = self.rx.as_mut().expect("an echo session");
        match rx.recv(&mut self.scratch)? {
            Some(len) if len == payload.len() => Ok(()),
            Some(len) => Err(io::Error::other(format!("echo of {len} bytes"))),
            None => Err(io::Error::other("peer closed")),
        }
    }

    /// Makes the echoing peer stop reading until [`resume`](Session::resume):
    /// it then waits in a blocking read of the control socket, using no CPU,
    /// so this process can measure something else (the spin probe) on both
    /// cores. The signal is an empty frame, which no measurement sends.
    pub fn pause(&mut self) -> io::Result<()> {
        self.tx.as_mut().expect("sender").send(&[])
    }

    /// Lets a paused peer read again.
    pub fn resume(&mut self) -> io::Result<()> {
        write_u64(&mut self.control, 1)
    }

    /// Sends `count` frames as fast as the transport takes them and returns
    /// the time until the sink has copied out the last one (sink mode).
    pub fn stream(&mut self, payload: &[u8], count: u64) -> io::Result<Duration> {
        let start = Instant::now();
        write_u64(&mut self.control, count)?;
        let tx = self.tx.as_mut().expect("sender");
        for _ in 0..count {
            tx.send(payload)?;
        }
        let read = read_u64(&mut self.control)?;
        let elapsed = start.elapsed();
        if read != count {
            return Err(io::Error::other(format!("sink read {read} of {count}")));
        }
        Ok(elapsed)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Closing our ends (ring close, socket EOF) ends the peer.
        self.tx = None;
        self.rx = None;
        let _ = self.control.shutdown(std::net::Shutdown::Both);
        if !matches!(self.pidfd.wait_exit(Duration::from_secs(10)), Ok(true)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Runs the peer's part and exits, when this process was started as a
/// peer; returns otherwise. Call first thing in `main`.
pub fn run_peer_if_child() {
    let Ok(role) = std::env::var(ROLE_VAR) else {
        return;
    };
    let transport = std::env::var(TRANSPORT_VAR)
        .ok()
        .and_then(|t| Transport::parse(&t))
        .expect("IPC_BENCH_TRANSPORT");
    let result = peer(&role, transport);
    if let Err(err) = result {
        eprintln!("ipc peer ({role}): {err}");
        std::process::exit(1);
    }
    std::process::exit(0);
}

fn peer(role: &str, transport: Transport) -> io::Result<()> {
    let mut control = UnixStream::from(io::stdin().as_fd().try_clone_to_owned()?);
    let (mut rx, mut tx) = match transport {
        Transport::Ring(strategy) => {
            let fds = ring_fds(recv_fds(&control, 2)?);
            let consumer = Consumer::attach(fds, strategy).map_err(io::Error::other)?;
            let tx = if role == "echo" {
                let (producer, fds) =
                    Producer::create(&ring_config(strategy)).map_err(io::Error::other)?;
                send_fds(&control, &[fds.data.as_fd(), fds.control.as_fd()])?;
                Some(Sender::Ring(producer, Deadline::new()))
            } else {
                None
            };
            (Receiver::Ring(consumer, Deadline::new()), tx)
        }
        Transport::Uds => {
            let stream = UnixStream::from(recv_fds(&control, 1)?.remove(0));
            let tx = (role == "echo").then(|| Sender::Uds {
                stream: stream.try_clone().expect("dup socket"),
                buf: Vec::with_capacity(MAX_FRAME + 8),
            });
            (
                Receiver::Uds(BufReader::with_capacity(64 << 10, stream)),
                tx,
            )
        }
    };
    write_u64(&mut control, 1)?;
    let mut buf = vec![0u8; MAX_FRAME];
    match tx.as_mut() {
        Some(tx) => {
            while let Some(len) = rx.recv(&mut buf)? {
                if len == 0 {
                    // Paused (`Session::pause`) until the control socket
                    // says go on.
                    read_u64(&mut control)?;
                    continue;
                }
                tx.send(&buf[..len])?;
            }
        }
        None => loop {
            let count = match read_u64(&mut control) {
                Ok(count) => count,
                Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(err) => return Err(err),
            };
            let mut read = 0;
            while read < count {
                match rx.recv_many(&mut buf, (count - read).min(BATCH))? {
                    Some(n) => read += n,
                    None => return Err(io::Error::other("sender closed mid-batch")),
                }
            }
            std::hint::black_box(&buf);
            write_u64(&mut control, read)?;
        },
    }
    Ok(())
}

/// One thread copying `size`-byte frames out of a ring-sized buffer (as a
/// reader copies frames out of the ring), for `count` frames; returns the
/// time taken.
pub fn memcpy_frames(size: usize, count: u64) -> Duration {
    let source: Vec<u8> = (0..RING_CAPACITY).map(|i| i as u8).collect();
    let mut out = vec![0u8; size];
    let mut at = 0;
    let start = Instant::now();
    for _ in 0..count {
        if at + size > source.len() {
            at = 0;
        }
        out.copy_from_slice(&source[at..at + size]);
        std::hint::black_box(&mut out);
        at += size.next_multiple_of(8) + 8;
    }
    start.elapsed()
}
