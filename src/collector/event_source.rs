//! [`EventSource`]: the process connector on a thread of its own.
//!
//! [`EventSource::start`] subscribes (on the caller's thread, so a refusal
//! is returned at once as a [`SubscribeError`]) and then starts a named
//! thread that owns the socket, receives into one reused buffer, decodes
//! ([`Decoder`]) and calls the handler, on that thread, for every event in
//! the order the kernel sent them, with [`Event::Lost`] where events were
//! dropped (an overrun or a sequence gap), so the owner can rescan `/proc`.
//!
//! Stopping: [`EventSource::stop`] (or dropping the source) sets a flag and
//! wakes the thread through an eventfd it polls beside the socket, so a
//! thread waiting for events wakes at once; one busy with a datagram sees
//! the flag before it receives the next. The thread then cannot be held up
//! by the kernel, only by the handler: `stop` waits for it up to
//! [`EventSourceConfig::stop_timeout`] and, if a handler is still running
//! then, leaves the thread to finish on its own (it exits after that
//! handler call returns) and says so.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::events::{Counters, Decoder, Event, EventStats, Tally};
use crate::sys::caps;
use crate::sys::cn_proc::{self, CnProcSocket, QueueProbe, Ready, Received, SubscribeError, Waker};

/// Bytes of the buffer datagrams are received into: a connector datagram
/// is 76 bytes; a larger one is counted as malformed (truncated).
const DATAGRAM_BUFFER: usize = 8192;

/// The most events received in one burst before they are handed on: enough
/// to look ahead over a fork storm's queue, small enough that the first of
/// them waits little.
const BURST_MAX: usize = 64;

/// What an [`EventSource`] hands its events to, on its thread. Any
/// `FnMut(Event)` is one.
pub trait EventHandler: Send + 'static {
    /// Each event, in the order the kernel sent them.
    fn event(&mut self, event: Event);

    /// Called with every burst of events received together (up to 64),
    /// before [`event`](Self::event) gets them one by one: a chance to act
    /// on an event ahead of the ones before it. procmond reads a new
    /// image's details here, before the process can exit. Default: nothing.
    fn ahead(&mut self, burst: &[Event]) {
        let _ = burst;
    }
}

impl<F: FnMut(Event) + Send + 'static> EventHandler for F {
    fn event(&mut self, event: Event) {
        self(event);
    }
}

/// Settings of an [`EventSource`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventSourceConfig {
    /// The socket's receive buffer: how many events may queue while the
    /// handler is busy (a 76-byte connector message is charged its whole
    /// socket buffer, several hundred bytes). Default 16 MiB.
    pub recv_buffer_bytes: usize,
    /// How long the kernel's acknowledgement of the subscription is awaited.
    /// Default 1 s.
    pub ack_timeout: Duration,
    /// How long [`EventSource::stop`] waits for the thread. Default 1 s.
    pub stop_timeout: Duration,
    /// The thread's name. Default `cn-proc`.
    pub thread_name: String,
    /// How often the handler gets [`Event::Tick`]; `None` (the default):
    /// never.
    pub tick: Option<Duration>,
    /// Once subscribed (or refused), give up `CAP_NET_ADMIN` for good on
    /// the calling thread, before the event thread starts (it inherits
    /// that): joining the connector's group and forcing the receive buffer
    /// are all it is needed for. For a process that has no other thread
    /// yet (procmond). Default false.
    pub give_up_net_admin: bool,
}

impl Default for EventSourceConfig {
    fn default() -> Self {
        Self {
            recv_buffer_bytes: 16 << 20,
            ack_timeout: Duration::from_secs(1),
            stop_timeout: Duration::from_secs(1),
            thread_name: "cn-proc".to_string(),
            tick: None,
            give_up_net_admin: false,
        }
    }
}

/// Why [`EventSource::stop`] did not end cleanly.
#[derive(Debug, thiserror::Error)]
pub enum StopError {
    /// The handler was still running when the wait ended; the thread exits
    /// once it returns.
    #[error("the process event thread did not stop within {waited:?} (its handler is busy)")]
    TimedOut {
        /// How long `stop` waited.
        waited: Duration,
    },
    /// The handler panicked (the thread had ended).
    #[error("the process event handler panicked")]
    HandlerPanicked,
    /// The thread could not be woken.
    #[error("cannot wake the process event thread: {0}")]
    Wake(std::io::Error),
}

/// Process events from the kernel, delivered to a handler on a thread of
/// their own; see the module documentation.
///
/// ```no_run
/// use daemoneye_lib::collector::{Event, EventSource, EventSourceConfig};
///
/// let source = EventSource::start(EventSourceConfig::default(), |event| match event {
///     Event::Process(p) => println!("{:?}", p.event),
///     Event::Lost { reason } => println!("lost events ({reason:?}): rescan /proc"),
///     Event::Failed { error } => println!("event source ended: {error}"),
///     Event::Subscribed | Event::Tick(_) => {}
/// });
/// match source {
///     Ok(source) => {
///         println!("{:?}", source.stats());
///         source.stop()?;
///     }
///     Err(why) => println!("polling instead: {why}"),
/// }
/// # Ok::<(), daemoneye_lib::collector::StopError>(())
/// ```
#[derive(Debug)]
pub struct EventSource {
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    waker: Waker,
    port: u32,
    recv_buffer_bytes: usize,
    stop_timeout: Duration,
    sync: Arc<SyncState>,
    probe: QueueProbe,
    thread: Option<(JoinHandle<()>, mpsc::Receiver<()>)>,
}

/// Requests that the thread catch up with the socket, and its answers.
#[derive(Debug, Default)]
struct SyncState {
    /// (requests made, requests answered): a request is answered once
    /// every datagram queued when it was made has been handed on.
    counts: Mutex<(u64, u64)>,
    answered: Condvar,
    /// Held by the thread from the moment datagrams may leave the socket
    /// until their events are handed on: whoever holds it and finds the
    /// socket empty knows every event queued before is in the handler.
    applying: Mutex<()>,
}

/// [`caps::give_up_net_admin`], its failure logged (it cannot fail unless
/// the kernel lacks capabilities).
pub(crate) fn give_up_net_admin() {
    match caps::give_up_net_admin() {
        Ok(()) => tracing::debug!("CAP_NET_ADMIN given up"),
        Err(error) => tracing::warn!(%error, "cannot give up CAP_NET_ADMIN"),
    }
}

impl EventSource {
    /// Subscribes to the kernel's process events and starts the thread that
    /// calls `handler` for each. Fails with [`SubscribeError::Disabled`]
    /// when [`cn_proc::disabled_by_env`] says so, and with the kernel's
    /// refusal otherwise (see [`CnProcSocket::subscribe`]).
    pub fn start<H: EventHandler>(
        config: EventSourceConfig,
        handler: H,
    ) -> Result<EventSource, SubscribeError> {
        if cn_proc::disabled_by_env() {
            return Err(SubscribeError::Disabled);
        }
        let socket = CnProcSocket::subscribe(config.recv_buffer_bytes, config.ack_timeout);
        if config.give_up_net_admin {
            give_up_net_admin();
        }
        let socket = socket?;
        let decoder = Decoder::new();
        let counters = decoder.counters();
        let stop = Arc::new(AtomicBool::new(false));
        let waker = socket.waker();
        let port = socket.port();
        let probe = socket.probe();
        let recv_buffer_bytes = socket.recv_buffer_bytes().unwrap_or_default();
        let (done, finished) = mpsc::channel();
        let sync = Arc::new(SyncState::default());
        let tick = config.tick;
        let thread = std::thread::Builder::new()
            .name(config.thread_name)
            .spawn({
                let stop = Arc::clone(&stop);
                let sync = Arc::clone(&sync);
                move || {
                    // Dropped when the thread ends, panic or not: `stop`
                    // waits on that.
                    let _done = done;
                    let _answer_all = AnswerAll(&sync);
                    run(&socket, decoder, &stop, &sync, tick, handler);
                }
            })
            .map_err(|err| SubscribeError::Io {
                during: "spawning the event thread",
                source: err,
            })?;
        Ok(EventSource {
            counters,
            stop,
            waker,
            port,
            recv_buffer_bytes,
            stop_timeout: config.stop_timeout,
            sync,
            probe,
            thread: Some((thread, finished)),
        })
    }

    /// Waits until every event the kernel had queued for this source when
    /// called has been handed to the handler (and the handler returned),
    /// or `timeout` passed; returns whether it caught up. A process that
    /// forked before the call is in a table the handler keeps, afterwards.
    ///
    /// When nothing is queued and the thread is not handing events on,
    /// this returns at once, without waking the thread: a poll on a quiet
    /// host costs no thread hand-off.
    pub fn sync(&self, timeout: Duration) -> bool {
        {
            let _applying = lock(&self.sync.applying);
            if matches!(self.probe.is_queued(), Ok(false)) {
                return true;
            }
        }
        let mut counts = lock(&self.sync.counts);
        counts.0 += 1;
        let ticket = counts.0;
        if self.waker.wake().is_err() {
            return false;
        }
        let deadline = std::time::Instant::now().checked_add(timeout);
        while counts.1 < ticket {
            let left = deadline.map_or(timeout, |d| {
                d.saturating_duration_since(std::time::Instant::now())
            });
            if left.is_zero() {
                return false;
            }
            counts = self
                .sync
                .answered
                .wait_timeout(counts, left)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poison| poison.into_inner().0);
        }
        true
    }

    /// The counters now.
    pub fn stats(&self) -> EventStats {
        self.counters.snapshot()
    }

    /// The socket's netlink port (a local process sending there is
    /// counted as spoofed).
    pub fn port(&self) -> u32 {
        self.port
    }

    /// The receive buffer the kernel granted, as it reports it (twice the
    /// size set, for its bookkeeping; less than asked when `SO_RCVBUFFORCE`
    /// was refused and `net.core.rmem_max` capped it). 0 if unknown.
    pub fn recv_buffer_bytes(&self) -> usize {
        self.recv_buffer_bytes
    }

    /// Stops the thread and waits for it (up to the configured
    /// `stop_timeout`). The socket is closed, and the kernel told to stop
    /// sending, when the thread ends.
    pub fn stop(mut self) -> Result<(), StopError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), StopError> {
        let Some((thread, finished)) = self.thread.take() else {
            return Ok(());
        };
        // Release pairs with the thread's Acquire load: the thread, woken
        // by the eventfd written below, sees the flag set.
        self.stop.store(true, Ordering::Release);
        self.waker.wake().map_err(StopError::Wake)?;
        match finished.recv_timeout(self.stop_timeout) {
            // The sender is never used: disconnection means the thread's
            // closure has returned or unwound, so the join is immediate.
            Err(mpsc::RecvTimeoutError::Disconnected) | Ok(()) => {
                thread.join().map_err(|_| StopError::HandlerPanicked)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => Err(StopError::TimedOut {
                waited: self.stop_timeout,
            }),
        }
    }
}

impl Drop for EventSource {
    fn drop(&mut self) {
        if let Err(error) = self.shutdown() {
            tracing::warn!(%error, "process event source not stopped cleanly");
        }
    }
}

/// The thread: receive, decode, hand on, until stopped or the socket fails.
fn run<H: EventHandler>(
    socket: &CnProcSocket,
    mut decoder: Decoder,
    stop: &AtomicBool,
    sync: &SyncState,
    tick: Option<Duration>,
    mut handler: H,
) {
    let mut buf = vec![0u8; DATAGRAM_BUFFER];
    let mut burst = Vec::with_capacity(BURST_MAX);
    let counters = decoder.counters();
    let probe = socket.probe();
    handler.event(Event::Subscribed);
    let mut next_tick = tick.and_then(|t| Instant::now().checked_add(t));
    // Acquire pairs with `shutdown`'s Release store.
    while !stop.load(Ordering::Acquire) {
        let timeout = next_tick.map(|at| at.saturating_duration_since(Instant::now()));
        let ready = socket.wait_ready(timeout);
        // Taken before anything is received and released once it is handed
        // on (below, or when the thread returns): `EventSource::sync`'s
        // quick answer relies on it.
        let applying = lock(&sync.applying);
        let outcome = match ready {
            Ok(Ready::Woken) => catch_up(
                socket,
                &mut decoder,
                sync,
                &mut buf,
                &mut burst,
                &mut handler,
            ),
            Ok(Ready::TimedOut) => Ok(()),
            // The handler looks ahead over the whole burst.
            Ok(Ready::Queued) => drain(socket, &mut decoder, &mut buf, &mut burst)
                .map(|_| deliver(&mut burst, &mut handler)),
            Err(error) => Err(error),
        };
        if let Err(error) = outcome {
            deliver(&mut burst, &mut handler);
            tracing::error!(%error, "process connector receive failed; events end");
            handler.event(Event::Failed {
                error: error.kind(),
            });
            return;
        }
        drop(applying);
        if let (Some(at), Some(every)) = (next_tick, tick)
            && Instant::now() >= at
        {
            handler.event(Event::Tick(tally(&counters, &probe)));
            next_tick = Instant::now().checked_add(every);
        }
    }
}

/// The kernel's task count beside the tasks heard, at a tick (on this
/// thread, between bursts, so every event received is counted). The
/// kernel's count is taken first: an event of a task it counts was queued
/// by then, and if nothing is queued after, it has been heard.
fn tally(counters: &Counters, probe: &QueueProbe) -> Tally {
    let kernel_tasks = crate::sys::procfs::task_count();
    let caught_up = matches!(probe.is_queued(), Ok(false));
    let stats = counters.snapshot();
    Tally {
        // Modulo 2^16, as the kernel's count: the truncation is the point.
        tasks_heard: stats.tasks_forked.wrapping_sub(stats.tasks_exited) as u16,
        kernel_tasks,
        caught_up,
    }
}

/// Decodes what one receive got into `burst`.
fn take(received: Received, buf: &[u8], decoder: &mut Decoder, burst: &mut Vec<Event>) {
    let mut push = |event| burst.push(event);
    match received {
        Received::Datagram {
            len,
            sender_port,
            truncated,
        } => {
            let datagram = buf.get(..len).unwrap_or_default();
            decoder.decode(datagram, sender_port, truncated, &mut push);
        }
        Received::Overrun => decoder.overrun(&mut push),
        Received::Woken | Received::TimedOut => {}
    }
}

/// Receives what is already queued into `burst`, up to [`BURST_MAX`]
/// events; false when the socket is empty.
fn drain(
    socket: &CnProcSocket,
    decoder: &mut Decoder,
    buf: &mut [u8],
    burst: &mut Vec<Event>,
) -> std::io::Result<bool> {
    while burst.len() < BURST_MAX {
        match socket.try_recv(buf)? {
            Some(received) => take(received, buf, decoder, burst),
            None => return Ok(false),
        }
    }
    Ok(true)
}

/// Hands `burst` to the handler: first whole, then event by event.
fn deliver<H: EventHandler>(burst: &mut Vec<Event>, handler: &mut H) {
    if burst.is_empty() {
        return;
    }
    handler.ahead(burst);
    for event in burst.drain(..) {
        handler.event(event);
    }
}

/// Answers [`EventSource::sync`] requests: hands on every datagram queued
/// now, and repeats while requests arrive meanwhile.
fn catch_up<H: EventHandler>(
    socket: &CnProcSocket,
    decoder: &mut Decoder,
    sync: &SyncState,
    buf: &mut [u8],
    burst: &mut Vec<Event>,
    handler: &mut H,
) -> std::io::Result<()> {
    // Requests made while draining are answered by another round: their
    // wakes may have been read (and dropped) by a receive meanwhile.
    loop {
        let asked = {
            let counts = lock(&sync.counts);
            if counts.1 >= counts.0 {
                return Ok(());
            }
            counts.0
        };
        while drain(socket, decoder, buf, burst)? {
            deliver(burst, handler);
        }
        deliver(burst, handler);
        // Every datagram queued when request `asked` was made has been
        // handed on: the queue was empty after it.
        let mut counts = lock(&sync.counts);
        counts.1 = counts.1.max(asked);
        sync.answered.notify_all();
    }
}

/// On the thread's end, answers every request, so no `sync` waits for a
/// thread that is gone.
struct AnswerAll<'a>(&'a SyncState);

impl Drop for AnswerAll<'_> {
    fn drop(&mut self) {
        let mut counts = lock(&self.0.counts);
        counts.1 = u64::MAX;
        self.0.answered.notify_all();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicked holder leaves only counters, which stay meaningful.
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}
