//! Transport-agnostic pieces of a connection, shared by every transport.
//!
//! - [`ConnLimiter`]: global and per-IP caps on open connections, handing out RAII
//!   [`ConnPermit`]s, so a transport can refuse a connection *before* doing any work for it.
//! - [`ShutdownSignal`]: the "stop now" broadcast a server gives its connection tasks.
//! - [`pump`]: runs one [`Session`] over any framed transport — reads decoded frames into the
//!   session, writes the outbox back in batches with one flush per batch, sends keepalive
//!   probes, reaps idle peers, and drains what is queued on shutdown, within deadlines.
//!
//! A transport only has to say how to read one frame ([`FrameReader`]) and how to write,
//! flush and probe ([`FrameWriter`]); what a connection *means* (when to stop, what to drain,
//! what a stalled writer is) is decided here, once, and tested without sockets.
//!
//! ```text
//!  FrameReader ──Inbound──▶ pump: reader half ──handle_bytes──▶ Session
//!                                                                  │
//!  FrameWriter ◀──feed/flush── pump: writer half ◀── Outbox ◀──────┘
//! ```

use crate::hub::CloseReason;
use crate::protocol::{Codec, Outgoing};
use crate::queue::Pumped;
use crate::session::{Outbound, Outbox, Session};
use bytes::Bytes;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;
use tokio::sync::Notify;

// ---------------------------------------------------------------------------------------------
// Connection caps
// ---------------------------------------------------------------------------------------------

/// Why [`ConnLimiter::try_acquire`] refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The server holds its maximum number of connections (HTTP 503 for WebSocket).
    #[error("the server is at its connection limit")]
    Full,
    /// This client address holds its maximum number of connections (HTTP 429).
    #[error("too many connections from this address")]
    PerIp,
}

/// The key connections are counted under: an IPv4 address, or the /64 prefix of an IPv6
/// address (one IPv6 client usually controls a whole /64, so counting single addresses would
/// not limit anything). IPv4-mapped IPv6 addresses count as their IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpKey(u128);

impl IpKey {
    /// The key for a client address.
    pub fn of(ip: IpAddr) -> IpKey {
        match ip {
            IpAddr::V4(v4) => IpKey(u128::from(u32::from(v4))),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpKey(u128::from(u32::from(v4))),
                // The top 64 bits, tagged with bit 32 so that no /64 collides with an IPv4
                // key (those fit in the low 32 bits).
                None => IpKey((u128::from(v6) & (!0u128 << 64)) | (1 << 32)),
            },
        }
    }
}

/// Caps on open connections, global and per client address.
///
/// Cheap to clone (an `Arc`). Counting happens under one `std::sync::Mutex` held for a hash
/// map update, never across an `.await`; one lock per accepted connection is far below what
/// an accept loop can do anyway.
#[derive(Debug, Clone)]
pub struct ConnLimiter {
    inner: Arc<LimiterInner>,
}

#[derive(Debug)]
struct LimiterInner {
    max_total: usize,
    max_per_ip: usize,
    state: Mutex<LimiterState>,
}

#[derive(Debug, Default)]
struct LimiterState {
    total: usize,
    per_ip: HashMap<IpKey, usize>,
}

impl ConnLimiter {
    /// At most `max_total` connections in all, and `max_per_ip` from one [`IpKey`].
    pub fn new(max_total: usize, max_per_ip: usize) -> ConnLimiter {
        ConnLimiter {
            inner: Arc::new(LimiterInner {
                max_total,
                max_per_ip,
                state: Mutex::new(LimiterState::default()),
            }),
        }
    }

    /// A permit for one connection from `ip`, or why not. The connection counts until the
    /// permit is dropped.
    pub fn try_acquire(&self, ip: IpAddr) -> Result<ConnPermit, Refused> {
        let key = IpKey::of(ip);
        let mut st = lock(&self.inner.state);
        if st.total >= self.inner.max_total {
            return Err(Refused::Full);
        }
        let n = st.per_ip.entry(key).or_insert(0);
        if *n >= self.inner.max_per_ip {
            return Err(Refused::PerIp);
        }
        *n += 1;
        st.total += 1;
        Ok(ConnPermit {
            limiter: self.inner.clone(),
            key,
        })
    }

    /// Connections currently holding a permit.
    pub fn open(&self) -> usize {
        lock(&self.inner.state).total
    }

    /// Connections currently holding a permit for `ip`'s key.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        let st = lock(&self.inner.state);
        st.per_ip.get(&IpKey::of(ip)).copied().unwrap_or(0)
    }
}

/// One counted connection; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnPermit {
    limiter: Arc<LimiterInner>,
    key: IpKey,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut st = lock(&self.limiter.state);
        st.total -= 1;
        if let Some(n) = st.per_ip.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                // Forget the address: the map must not grow with every client ever seen.
                st.per_ip.remove(&self.key);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the counters half-updated in a way that
    // matters more than refusing service forever would, so recover from poisoning.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------------------------

/// Tells every connection task of a server to wind down.
///
/// Cheap to clone; every clone observes the same trigger. Connection tasks select on
/// [`ShutdownSignal::triggered`]: handshakes in progress are abandoned, live sessions drain
/// what is queued and close with "going away". (The server waits for its tasks separately,
/// e.g. with a `JoinSet`, and aborts the stragglers after its deadline.)
#[derive(Debug, Clone, Default)]
pub struct ShutdownSignal {
    /// Not a `CancellationToken`: every live connection polls [`ShutdownSignal::triggered`]
    /// on every wake-up, and a token's check takes a mutex; here it is an atomic load.
    inner: Arc<ShutdownInner>,
}

#[derive(Debug, Default)]
struct ShutdownInner {
    fired: AtomicBool,
    notify: Notify,
}

impl ShutdownSignal {
    /// A signal that has not fired.
    pub fn new() -> ShutdownSignal {
        ShutdownSignal::default()
    }

    /// Fires the signal. Idempotent.
    pub fn trigger(&self) {
        if !self.inner.fired.swap(true, Ordering::AcqRel) {
            self.inner.notify.notify_waiters();
        }
    }

    /// Whether it has fired.
    pub fn is_triggered(&self) -> bool {
        self.inner.fired.load(Ordering::Acquire)
    }

    /// Resolves once the signal has fired (at once if it already has).
    pub async fn triggered(&self) {
        loop {
            // Created before the check: `notify_waiters` reaches a `Notified` from its
            // creation on, so a trigger between the check and the wait is not missed.
            let notified = self.inner.notify.notified();
            if self.is_triggered() {
                return;
            }
            notified.await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The pump
// ---------------------------------------------------------------------------------------------

/// Something a peer sent, as the pump sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A data frame to decode in `codec`.
    Frame {
        /// The codec the frame is in (for WebSocket: text → JSON, binary → postcard).
        codec: Codec,
        /// The frame's payload.
        bytes: Bytes,
    },
    /// A sign of life that carries no request (a WebSocket ping or pong). It resets the idle
    /// timer and nothing else.
    Alive,
}

/// The receiving half of a connection.
pub trait FrameReader: Send {
    /// Why reading failed: a frame too large, bad encoding, I/O. The transport maps it to its
    /// own close code.
    type Error: Send;

    /// The next thing the peer sent; `Ok(None)` when the peer closed the connection.
    ///
    /// Must be cancel-safe: the pump drops this future when the session is closed while a
    /// read is pending, and nothing may be lost when it is called again.
    fn read(&mut self) -> impl Future<Output = Result<Option<Inbound>, Self::Error>> + Send;
}

/// The sending half of a connection.
pub trait FrameWriter: Send {
    /// Why writing failed.
    type Error: Send;

    /// Buffers one frame in `codec`'s framing. May write to the peer when its buffer is full,
    /// but need not flush.
    fn feed(
        &mut self,
        codec: Codec,
        bytes: Bytes,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Buffers one queued frame. The pump calls this, not [`FrameWriter::feed`], for every
    /// frame it takes from the outbox.
    ///
    /// The default encodes the frame in `codec` — once, shared with every other recipient of
    /// the same fan-out frame (see [`Outgoing::encoded`]) — and calls `feed`; that is what
    /// a transport of protocol frames wants. A transport that shows frames in some other form
    /// overrides it to work from [`Outgoing::response`] directly (TCP line mode renders each
    /// frame as text for a terminal), instead of decoding bytes that were encoded only to be
    /// handed to it.
    fn feed_frame(
        &mut self,
        codec: Codec,
        frame: Arc<Outgoing>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.feed(codec, frame.encoded(codec))
    }

    /// Writes everything buffered to the peer.
    fn flush(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Buffers a keepalive probe the peer is expected to answer (a WebSocket ping). The pump
    /// flushes after it.
    fn probe(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// How a connection's outgoing codec is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecChoice {
    /// Fixed before the session starts (negotiated during the handshake).
    Fixed(Codec),
    /// The codec of the first data frame the peer sends; until then, `until_then`.
    FirstFrame {
        /// Used for anything written before the peer's first data frame.
        until_then: Codec,
    },
}

/// Deadlines and sizes of the pump. Transports fill it from their own configuration.
#[derive(Debug, Clone)]
pub struct PumpConfig {
    /// How long the peer may be silent before it is sent a keepalive probe (and again after
    /// each further interval of silence). Anything the peer sends counts as a sign of life.
    pub probe_interval: Duration,
    /// The peer is closed when nothing at all (not even a probe answer) arrives for this long.
    /// Should exceed `probe_interval` by a round trip and some slack.
    pub idle_timeout: Duration,
    /// Longest one batch (or one probe) may take to write and flush. A peer that does not
    /// absorb a batch in this time is not reading; it is closed as
    /// [`CloseReason::SlowConsumer`] even if its queue never filled.
    pub write_timeout: Duration,
    /// Most frames written per flush.
    pub max_batch: usize,
    /// On shutdown, how long to keep writing what is still queued.
    pub drain_timeout: Duration,
    /// Least time from the end of one flush to the start of the next; zero (the default)
    /// writes as soon as a frame is queued.
    ///
    /// A frame queued sooner after the last flush waits for the interval to end and goes out
    /// with everything queued meanwhile: under load, fewer and larger writes — fewer system
    /// calls on both ends and fewer wake-ups of the peer — at the price of at most this much
    /// added latency. A frame on a connection that has been quiet for the interval goes out
    /// at once, so a lightly loaded server pays nothing. (Centrifugo's `write_delay` makes
    /// the same trade; see docs/BENCHMARKS.md for what it buys at 200 000 deliveries/s.)
    pub flush_interval: Duration,
}

impl Default for PumpConfig {
    fn default() -> Self {
        PumpConfig {
            probe_interval: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(45),
            write_timeout: Duration::from_secs(10),
            max_batch: 64,
            drain_timeout: Duration::from_secs(5),
            flush_interval: Duration::ZERO,
        }
    }
}

/// Why a pumped connection ended. The transport turns it into a close code.
#[derive(Debug)]
pub enum PumpEnd<E> {
    /// The session was closed: by the engine (slow consumer, policy violation, revocation,
    /// [`crate::Engine::shutdown`]), by the [`ShutdownSignal`], or by the pump itself when a
    /// write stalled ([`CloseReason::SlowConsumer`]). For [`CloseReason::Shutdown`], what was
    /// queued has been written (within the drain deadline).
    Closed(CloseReason),
    /// The peer closed the connection.
    PeerClosed,
    /// Nothing arrived from the peer within the idle timeout.
    IdleTimeout,
    /// Reading failed; the transport decides what the error means.
    ReadError(E),
    /// Writing failed; the connection is unusable.
    WriteError(E),
}

/// The codec cell shared by the two halves: 0 = not chosen yet.
struct CodecCell(AtomicU8);

impl CodecCell {
    fn new(choice: CodecChoice) -> (CodecCell, Codec) {
        match choice {
            CodecChoice::Fixed(c) => (CodecCell(AtomicU8::new(encode(c))), c),
            CodecChoice::FirstFrame { until_then } => (CodecCell(AtomicU8::new(0)), until_then),
        }
    }

    fn get(&self, default: Codec) -> Codec {
        match self.0.load(Ordering::Relaxed) {
            1 => Codec::Json,
            2 => Codec::Postcard,
            _ => default,
        }
    }

    fn first_frame(&self, codec: Codec) {
        let _ = self
            .0
            .compare_exchange(0, encode(codec), Ordering::Relaxed, Ordering::Relaxed);
    }
}

fn encode(c: Codec) -> u8 {
    match c {
        Codec::Json => 1,
        Codec::Postcard => 2,
    }
}

/// [`tokio::time::timeout`], except that the timer is made only if `fut` is not ready on its
/// first poll; the deadline then runs from that poll.
///
/// Why: nearly every write of a fan-out batch, and most reads on a busy connection, complete
/// on the first poll, and a `Timeout` costs a clock read plus a clone and a drop of the
/// runtime's handle — an atomic count shared by every connection and bounced between the
/// worker threads. At saturation `Timeout::poll` was 1.1 % of chat-server's CPU, and is gone.
/// A future of its own rather than an `async fn`: the `async fn` version kept two copies of
/// the wrapped future in its state, and the write future is the largest thing in a
/// connection's task (its task grew by about 400 bytes, idle or not).
fn timeout_if_pending<F: Future>(limit: Duration, fut: F) -> LazyDeadline<F> {
    LazyDeadline {
        fut,
        limit: Limit::After(limit),
        timer: None,
    }
}

/// [`timeout_if_pending`] with a deadline instead of a duration; `None` waits for ever.
fn deadline_if_pending<F: Future>(
    deadline: Option<tokio::time::Instant>,
    fut: F,
) -> LazyDeadline<F> {
    LazyDeadline {
        fut,
        limit: Limit::At(deadline),
        timer: None,
    }
}

/// When the reader, having last heard from the peer at `heard` and probed it `probes_sent`
/// times since, next asks for a probe (`None`: not before the idle deadline) and when it gives
/// the peer up (`None`: never, the deadline being out of the clock's range). A zero probe
/// interval means no probes.
fn keepalive_deadlines(
    heard: tokio::time::Instant,
    probes_sent: u32,
    config: &PumpConfig,
) -> (Option<tokio::time::Instant>, Option<tokio::time::Instant>) {
    let idle_at = heard.checked_add(config.idle_timeout);
    let probe_at = (!config.probe_interval.is_zero())
        .then(|| config.probe_interval.checked_mul(probes_sent + 1))
        .flatten()
        .and_then(|d| heard.checked_add(d))
        .filter(|&p| idle_at.is_none_or(|i| p < i));
    (probe_at, idle_at)
}

/// When a [`LazyDeadline`] gives up.
#[derive(Debug, Clone, Copy)]
enum Limit {
    /// This long after the first poll that found the future not ready.
    After(Duration),
    /// At this instant; `None`: never.
    At(Option<tokio::time::Instant>),
}

/// The deadline of a [`LazyDeadline`] passed first.
#[derive(Debug)]
struct Elapsed;

pin_project_lite::pin_project! {
    /// See [`timeout_if_pending`].
    struct LazyDeadline<F> {
        #[pin]
        fut: F,
        limit: Limit,
        // Made on the first poll that finds `fut` not ready.
        #[pin]
        timer: Option<tokio::time::Sleep>,
    }
}

impl<F: Future> Future for LazyDeadline<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(out) = this.fut.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        if this.timer.is_none() {
            let at = match *this.limit {
                Limit::After(d) => tokio::time::Instant::now().checked_add(d),
                Limit::At(at) => at,
            };
            match at {
                Some(at) => this.timer.set(Some(tokio::time::sleep_until(at))),
                // Out of the clock's range, or no deadline: never.
                None => return Poll::Pending,
            }
        }
        match this.timer.as_pin_mut() {
            Some(timer) => timer.poll(cx).map(|()| Err(Elapsed)),
            None => Poll::Pending,
        }
    }
}

/// Which half of a connection ended first, with its result.
enum Half<R, W> {
    Reader(R),
    Writer(W),
}

/// Runs the two halves of a connection in the caller's task until one ends, polling the
/// reader only when something it waits on woke it.
///
/// Why not `tokio::select!`: it polls every branch whenever the task wakes, and the writer
/// wakes for every frame queued — on a fan-out, once per message per connection — while the
/// reader waits on a socket that is mostly quiet. Each needless poll of the reader re-ran the
/// transport's read path (for WebSocket: a `BiLock`, tungstenite's waker registrations, a
/// readiness check). The reader is polled with a waker of its own that marks it woken; the
/// writer, cheap to poll when nothing is queued, is polled every time. Cost: one small
/// allocation per connection.
async fn first_of<R: Future, W: Future>(
    mut reader: Pin<&mut R>,
    mut writer: Pin<&mut W>,
) -> Half<R::Output, W::Output> {
    let woken = Arc::new(ReaderWake {
        // The first poll polls both.
        woken: AtomicBool::new(true),
        task: Mutex::new(None),
    });
    let reader_waker = Waker::from(woken.clone());
    // The task's waker as last handed to `woken`: a task's waker does not change from one
    // poll to the next, so this costs a pointer comparison per poll, not an atomic.
    let mut task: Option<Waker> = None;
    std::future::poll_fn(move |cx| {
        // Handed over before the flag is looked at: a wake-up in between is seen either way.
        if !task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
            let waker = cx.waker().clone();
            *lock(&woken.task) = Some(waker.clone());
            task = Some(waker);
        }
        if woken.woken.swap(false, Ordering::AcqRel) {
            let mut rcx = Context::from_waker(&reader_waker);
            if let Poll::Ready(end) = reader.as_mut().poll(&mut rcx) {
                return Poll::Ready(Half::Reader(end));
            }
        }
        writer.as_mut().poll(cx).map(Half::Writer)
    })
    .await
}

/// The reader half's waker in [`first_of`]: marks the reader woken, then wakes the task.
struct ReaderWake {
    woken: AtomicBool,
    /// The task to wake. Under a mutex, not an `AtomicWaker`: it is written only when the
    /// task's waker changes and read only when the reader is woken, both rare, while an
    /// `AtomicWaker` would be re-registered (two atomic exchanges) on every poll.
    task: Mutex<Option<Waker>>,
}

impl Wake for ReaderWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        if let Some(task) = lock(&self.task).as_ref() {
            task.wake_by_ref();
        }
    }
}

enum WriterEnd<E> {
    Closed(CloseReason),
    Stalled,
    Error(E),
}

/// Runs one session until it ends, and says why.
///
/// The reader half feeds each inbound frame to [`Session::handle_bytes`]; the writer half
/// writes the [`Outbox`] in batches — it waits for one frame, takes whatever else is already
/// queued (up to [`PumpConfig::max_batch`]) with [`Outbox::drain_into`], and flushes once. Both
/// halves run concurrently in the caller's task, so a slow store call never stops writes and a
/// blocked write never stops reads.
///
/// Ending:
/// - The engine closes the session (the reader sees it at once, even while a write is blocked
///   on a peer that does not read). Except for shutdown, the backlog is **not** written: a
///   slow consumer is cut off, not served first.
/// - Shutdown ([`ShutdownSignal`] or [`crate::Engine::shutdown`]): reading stops, and what is
///   queued is written and flushed within [`PumpConfig::drain_timeout`].
/// - A batch that does not flush within [`PumpConfig::write_timeout`] closes the session as
///   [`CloseReason::SlowConsumer`].
/// - Nothing from the peer within [`PumpConfig::idle_timeout`]: [`PumpEnd::IdleTimeout`].
///
/// The session is dropped (unregistered from the hub) before this returns, so nothing more is
/// delivered to it while the transport says goodbye.
pub async fn pump<R, W>(
    mut session: Session,
    mut outbox: Outbox,
    reader: &mut R,
    writer: &mut W,
    codec: CodecChoice,
    config: &PumpConfig,
    shutdown: &ShutdownSignal,
) -> PumpEnd<R::Error>
where
    R: FrameReader,
    W: FrameWriter<Error = R::Error>,
{
    let (cell, default_codec) = CodecCell::new(codec);
    let max_batch = config.max_batch.max(1);

    let end = {
        let cell = &cell;
        let session_ref = &mut session;
        let reader_half = async move {
            // Keepalive lives here, on the reading side: the peer is probed after each
            // `probe_interval` of its silence and given up after `idle_timeout` of it. The
            // writer only sends the probes it is asked for (through its queue), so it has no
            // timer of its own to poll every time it wakes up to write.
            let mut heard = tokio::time::Instant::now();
            let mut probes_sent = 0u32;
            loop {
                // Only `heard` and `probes_sent` live across the wait (the deadlines are
                // worked out again if it times out): what lives across an `.await` is part
                // of every idle connection's task.
                let (probe_at, idle_at) = keepalive_deadlines(heard, probes_sent, config);
                let next = tokio::select! {
                    biased;
                    reason = session_ref.closed() => return PumpEnd::Closed(reason),
                    () = shutdown.triggered() => {
                        // Through the session, so the writer half sees it in the outbox too.
                        session_ref.close(CloseReason::Shutdown);
                        continue;
                    }
                    next = deadline_if_pending(probe_at.or(idle_at), reader.read()) => next,
                };
                let next = match next {
                    Err(Elapsed) => {
                        if keepalive_deadlines(heard, probes_sent, config).0.is_none() {
                            return PumpEnd::IdleTimeout;
                        }
                        probes_sent += 1;
                        session_ref.request_probe();
                        continue;
                    }
                    Ok(next) => next,
                };
                heard = tokio::time::Instant::now();
                probes_sent = 0;
                match next {
                    Err(e) => return PumpEnd::ReadError(e),
                    Ok(None) => return PumpEnd::PeerClosed,
                    Ok(Some(Inbound::Alive)) => {}
                    Ok(Some(Inbound::Frame { codec, bytes })) => {
                        cell.first_frame(codec);
                        // Boxed: handling a request is a large future (kilobytes), and
                        // inline it would be part of every connection's task, idle or
                        // not. One allocation per request is cheap next to the request.
                        Box::pin(session_ref.handle_bytes(codec, &bytes)).await;
                    }
                }
            }
        };

        let outbox = &mut outbox;
        let writer = &mut *writer;
        let writer_half = async move {
            // Grows to at most `max_batch` pointers on first use and is reused after.
            let mut batch = Vec::new();
            // When the last batch was flushed (kept only with a flush interval: no clock read
            // per batch otherwise); `None` until the first, which goes at once.
            let mut last_flush: Option<tokio::time::Instant> = None;
            loop {
                let first = match outbox.recv_or_probe().await {
                    Pumped::Probe => {
                        let probe = async {
                            writer.probe().await?;
                            writer.flush().await
                        };
                        match tokio::time::timeout(config.write_timeout, probe).await {
                            Err(_) => return WriterEnd::Stalled,
                            Ok(Err(e)) => return WriterEnd::Error(e),
                            Ok(Ok(())) => continue,
                        }
                    }
                    Pumped::Out(out) => out,
                };
                let first = match first {
                    Outbound::Frame(f) => f,
                    Outbound::Close(CloseReason::Shutdown) => {
                        // Drain a snapshot of what is waiting: frames still arriving after
                        // the close must not keep us here.
                        let queued = outbox.len();
                        outbox.drain_into(&mut batch, queued);
                        let drain = async {
                            let c = cell.get(default_codec);
                            for f in batch.drain(..) {
                                writer.feed_frame(c, f).await?;
                            }
                            writer.flush().await
                        };
                        return match tokio::time::timeout(config.drain_timeout, drain).await {
                            Ok(Err(e)) => WriterEnd::Error(e),
                            _ => WriterEnd::Closed(CloseReason::Shutdown),
                        };
                    }
                    Outbound::Close(reason) => return WriterEnd::Closed(reason),
                };
                if let Some(last) = last_flush {
                    // Coalescing: a frame that comes soon after the last flush waits for the
                    // interval to end, and whatever else was queued meanwhile goes with it.
                    let next = last + config.flush_interval;
                    if tokio::time::Instant::now() < next {
                        tokio::time::sleep_until(next).await;
                    }
                }
                // Whatever else is waiting (queue and rings) joins the batch.
                batch.push(first);
                outbox.drain_into(&mut batch, max_batch - 1);
                let write = async {
                    let c = cell.get(default_codec);
                    for f in batch.drain(..) {
                        writer.feed_frame(c, f).await?;
                    }
                    writer.flush().await
                };
                match timeout_if_pending(config.write_timeout, write).await {
                    Err(_) => return WriterEnd::Stalled,
                    Ok(Err(e)) => return WriterEnd::Error(e),
                    Ok(Ok(())) => {}
                }
                if !config.flush_interval.is_zero() {
                    last_flush = Some(tokio::time::Instant::now());
                }
            }
        };

        tokio::pin!(reader_half, writer_half);
        match first_of(reader_half.as_mut(), writer_half.as_mut()).await {
            Half::Reader(end) => match end {
                PumpEnd::Closed(CloseReason::Shutdown) => {
                    // Let the writer drain; it sees the close in the outbox. Its own deadline
                    // bounds this, the outer one is a backstop.
                    let backstop = config.drain_timeout + config.write_timeout;
                    match tokio::time::timeout(backstop, &mut writer_half).await {
                        Ok(WriterEnd::Error(e)) => PumpEnd::WriteError(e),
                        _ => PumpEnd::Closed(CloseReason::Shutdown),
                    }
                }
                other => other,
            },
            Half::Writer(end) => match end {
                WriterEnd::Closed(reason) => PumpEnd::Closed(reason),
                WriterEnd::Error(e) => PumpEnd::WriteError(e),
                // Decided below, once the reader half no longer borrows the session.
                WriterEnd::Stalled => PumpEnd::Closed(CloseReason::SlowConsumer),
            },
        }
    };

    if let PumpEnd::Closed(CloseReason::SlowConsumer) = end {
        // A stalled write closes the session as a slow consumer, unless the engine had already
        // closed it for another reason: the first reason wins.
        session.close(CloseReason::SlowConsumer);
        let reason = session.closed().await;
        return PumpEnd::Closed(reason);
    }
    end
}

// The pump's tests drive it over in-memory halves with a real engine on `MemoryStore`; they
// live in `transport-ws/tests/ws/pump.rs` because `chat-store` cannot be used from chat-core's
// unit tests (its `Store` impl is for the non-test build of this crate).
// ---------------------------------------------------------------------------------------------
// The accept loop
// ---------------------------------------------------------------------------------------------

/// Whether an accept error concerns only the one connection being accepted (skip it), as
/// opposed to the listener or the process (out of file descriptors or memory: back off).
pub fn is_per_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock
    )
}

/// The accept loop every transport runs, generic over what "accept" is so that this crate
/// needs no socket type.
///
/// Accepts with `accept` until `shutdown` resolves, handing each connection to `admit`, which
/// spawns its task on the given `JoinSet`. Accept errors never end the loop: an error about one
/// connection is skipped, and anything else (no file descriptors, no memory) backs off from
/// 10 ms doubling to 1 s instead of spinning. When `shutdown` resolves: stops accepting, calls
/// `stopping` (which should tell the connections to finish), waits up to `drain_deadline` for
/// their tasks, and drops the stragglers.
pub async fn serve_accepted<C, A, F>(
    name: &'static str,
    mut accept: A,
    mut admit: impl FnMut(&mut tokio::task::JoinSet<()>, C, std::net::SocketAddr),
    shutdown: impl Future<Output = ()>,
    stopping: impl FnOnce(),
    drain_deadline: Duration,
) where
    A: FnMut() -> F,
    F: Future<Output = std::io::Result<(C, std::net::SocketAddr)>>,
{
    let mut tasks = tokio::task::JoinSet::new();
    let mut backoff = Duration::ZERO;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            done = tasks.join_next(), if !tasks.is_empty() => {
                if let Some(Err(e)) = done {
                    if e.is_panic() {
                        tracing::error!(server = name, error = %e, "connection task panicked");
                    }
                }
            }
            accepted = accept() => match accepted {
                Ok((conn, peer)) => {
                    backoff = Duration::ZERO;
                    admit(&mut tasks, conn, peer);
                }
                Err(e) if is_per_connection_error(&e) => {
                    tracing::debug!(server = name, error = %e, "accept failed for one connection");
                }
                Err(e) => {
                    backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                    tracing::warn!(server = name, error = %e, ?backoff, "accept failed; backing off");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = &mut shutdown => break,
                    }
                }
            },
        }
    }
    tracing::info!(server = name, connections = tasks.len(), "shutting down");
    stopping();
    let drained = tokio::time::timeout(drain_deadline, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            server = name,
            stragglers = tasks.len(),
            "shutdown deadline passed; dropping"
        );
    }
    tasks.shutdown().await;
}

/// Admits one accepted connection under the caps, or refuses it — the policy every
/// transport applies, in one place.
///
/// With a permit from `limiter`, spawns `serve(conn, permit)` on `tasks`. Without one, spawns
/// `refuse(conn, why)` (the transport's "server full" / "too many connections" answer) if one
/// of the `refusals` budget's permits is free; otherwise drops the connection unanswered, so
/// that a flood cannot turn refusals into the resource it exhausts. Returns `false` only in
/// that last case.
pub fn admit<C, S, R>(
    tasks: &mut tokio::task::JoinSet<()>,
    limiter: &ConnLimiter,
    refusals: &Arc<tokio::sync::Semaphore>,
    conn: C,
    peer: std::net::SocketAddr,
    serve: impl FnOnce(C, ConnPermit) -> S,
    refuse: impl FnOnce(C, Refused) -> R,
) -> bool
where
    S: Future<Output = ()> + Send + 'static,
    R: Future<Output = ()> + Send + 'static,
{
    match limiter.try_acquire(peer.ip()) {
        Ok(permit) => {
            tasks.spawn(serve(conn, permit));
            true
        }
        Err(why) => match refusals.clone().try_acquire_owned() {
            Ok(budget) => {
                let refusal = refuse(conn, why);
                tasks.spawn(async move {
                    refusal.await;
                    drop(budget);
                });
                true
            }
            Err(_) => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn limiter_caps_globally_and_per_address_and_frees_on_drop() {
        let l = ConnLimiter::new(3, 2);
        let a = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let b = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        let p1 = l.try_acquire(a).unwrap();
        let _p2 = l.try_acquire(a).unwrap();
        assert_eq!(l.try_acquire(a).unwrap_err(), Refused::PerIp);
        let _p3 = l.try_acquire(b).unwrap();
        assert_eq!(l.try_acquire(b).unwrap_err(), Refused::Full);
        assert_eq!((l.open(), l.open_from(a)), (3, 2));
        drop(p1);
        assert_eq!((l.open(), l.open_from(a)), (2, 1));
        let _p4 = l.try_acquire(a).unwrap();
    }

    #[test]
    fn ipv6_clients_are_counted_per_64_and_mapped_v4_as_v4() {
        let x: Ipv6Addr = "2001:db8:1:2::1".parse().unwrap();
        let y: Ipv6Addr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let z: Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(IpKey::of(x.into()), IpKey::of(y.into()));
        assert_ne!(IpKey::of(x.into()), IpKey::of(z.into()));
        let mapped: Ipv6Addr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(
            IpKey::of(mapped.into()),
            IpKey::of(Ipv4Addr::new(10, 0, 0, 1).into())
        );
    }

    #[tokio::test]
    async fn shutdown_signal_fires_every_clone() {
        let s = ShutdownSignal::new();
        let c = s.clone();
        assert!(!c.is_triggered());
        s.trigger();
        c.triggered().await;
        assert!(c.is_triggered());
    }

    /// `first_of` polls the reader only after something it waits on woke it: ten wake-ups
    /// of the writer cost the reader no poll; its own wake-up does, and ends it.
    #[tokio::test]
    async fn first_of_polls_the_reader_only_when_it_was_woken() {
        use std::sync::atomic::AtomicUsize;
        let reader_polls = AtomicUsize::new(0);
        let reader_go = Notify::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let reader = async {
            let mut waiting = std::pin::pin!(reader_go.notified());
            std::future::poll_fn(|cx| {
                reader_polls.fetch_add(1, Ordering::Relaxed);
                waiting.as_mut().poll(cx)
            })
            .await;
            "reader done"
        };
        let writer = async {
            let mut got = 0;
            while let Some(n) = rx.recv().await {
                got += n;
            }
            got
        };
        let driver = async {
            for _ in 0..10 {
                tx.send(1).unwrap();
                tokio::task::yield_now().await;
            }
            assert_eq!(
                reader_polls.load(Ordering::Relaxed),
                1,
                "only the first poll reached the reader"
            );
            reader_go.notify_one();
        };
        let (reader, writer) = (std::pin::pin!(reader), std::pin::pin!(writer));
        let (first, ()) = tokio::join!(first_of(reader, writer), driver);
        assert!(matches!(first, Half::Reader("reader done")));
        assert_eq!(reader_polls.load(Ordering::Relaxed), 2);
    }
}
