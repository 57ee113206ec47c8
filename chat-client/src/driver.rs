//! The connection task: one per client. It owns the connection and everything that must
//! survive a reconnection — requests waiting for replies, the last seq delivered per room —
//! and is the only writer of the event channel.
//!
//! ```text
//!  Client::request ──Command──▶ outq ──pacer──▶ Conn ──▶ server
//!        ▲                                       │
//!        └──── oneshot ◀── pending (by id) ◀─────┤ replies
//!  Events ◀── bounded channel ◀── dedupe/lag ◀───┘ events
//! ```
//!
//! Every queue here is bounded: the command channel and `outq` + `pending` by
//! `max_in_flight`, the event channel by `event_capacity`, the event backlog by
//! [`MAX_BACKLOG`]. Every loop is bounded: reconnection by `max_attempts`, retries of a request
//! by `max_request_retries`, resubscription of a room after `rate_limited` or
//! `storage_error` by [`MAX_RESUME_ATTEMPTS`].

use crate::config::ClientConfig;
use crate::conn::{CLOSE_POLICY, CLOSE_REVOKED, Conn, Ended, Incoming, Welcome, WriteError};
use crate::error::{ClientError, CloseReason, is_auth_code};
use crate::event::Event;
use chat_core::protocol::{ClientFrame, Entry, Request, Response, ServerFrame};
use chat_core::{ErrorCode, RoomId, Seq, SessionId};
use futures_util::FutureExt;
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};

/// Most non-ephemeral events held while the event channel is full (room announcements,
/// unsubscriptions, connection events: a handful per reconnection). Beyond it the oldest is
/// discarded and counted in `Lagged`.
const MAX_BACKLOG: usize = 256;
/// How often a room's resubscription is sent before it is given up, when the server answers
/// with a passing failure ([`is_passing`]).
const MAX_RESUME_ATTEMPTS: u32 = 5;

/// The first wait after a resubscription was answered with a passing failure; it doubles each
/// time.
const RESUME_BACKOFF: Duration = Duration::from_millis(250);
/// Most incoming frames handled in one go, without waiting, once one has arrived.
const MAX_BURST: usize = 32;

pub(crate) type Reply = oneshot::Sender<Result<ServerFrame, ClientError>>;

/// Errors that say "not now" rather than "no": the request had no effect and the same one
/// may succeed a moment later (PROTOCOL.md §7). A resubscription answered with one is sent
/// again after a wait, instead of dropping the room.
fn is_passing(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::RateLimited | ErrorCode::StorageError)
}

/// What a [`Client`](crate::Client) asks of the driver.
pub(crate) enum Command {
    /// A request that expects a reply.
    Request { frame: ClientFrame, reply: Reply },
    /// A frame that gets no reply (`typing`): written if connected, dropped otherwise.
    Fire(ClientFrame),
}

/// State shared between the handles and the driver.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) closed: Arc<OnceLock<CloseReason>>,
    pub(crate) welcome: Mutex<Welcome>,
    /// [`Client::close`](crate::Client::close): not a command, so that it is heard even when
    /// the command queue is full.
    pub(crate) close: Notify,
}

impl Shared {
    pub(crate) fn welcome(&self) -> Welcome {
        self.welcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

enum Kind {
    /// The application's request.
    User { reply: Reply, retries: u32 },
    /// The client's own resubscription of a room from `since` (after a reconnection, or
    /// once a lagging consumer has caught up).
    Resume {
        room: RoomId,
        after_reconnect: bool,
        attempts: u32,
    },
    /// A liveness ping.
    Keepalive,
    /// The client's own `unsubscribe` of a room it gave up on; the reply changes nothing.
    Forget,
}

struct Queued {
    frame: ClientFrame,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RoomState {
    /// Messages are delivered as they arrive.
    Live,
    /// The event channel was full when a message arrived: this room's messages are dropped
    /// until the consumer catches up, then it is resubscribed from `last_seen`.
    Lagging,
    /// A resubscription is in flight; messages of the old subscription are dropped (the
    /// replay covers them).
    Resyncing,
}

#[derive(Debug, Clone, Copy)]
struct Track {
    /// The highest seq delivered to the consumer (or handed to it in a `subscribed` reply).
    last_seen: Seq,
    state: RoomState,
}

struct ResumeProgress {
    session: SessionId,
    outstanding: usize,
    resumed: usize,
    failed: usize,
}

enum Keepalive {
    Idle,
    /// A ping is out, written at `at`.
    Sent {
        at: Instant,
    },
}

/// How a connected period ended.
enum Outcome {
    Lost(Ended),
    Terminal(CloseReason),
    Closed,
}

/// The bounded event channel plus a small backlog for events that must not be lost.
struct EventSink {
    tx: mpsc::Sender<Event>,
    backlog: VecDeque<Event>,
    dropped: u64,
}

impl EventSink {
    /// Emits a non-message event: ephemeral ones are dropped when the consumer lags, the
    /// others wait in the backlog (in order).
    fn emit(&mut self, ev: Event) {
        if !self.backlog.is_empty() {
            self.keep(ev);
            return;
        }
        match self.tx.try_send(ev) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(ev)) => self.keep(ev),
        }
    }

    fn keep(&mut self, ev: Event) {
        if ev.is_ephemeral() {
            self.dropped += 1;
            return;
        }
        if self.backlog.len() >= MAX_BACKLOG {
            self.backlog.pop_front();
            self.dropped += 1;
        }
        self.backlog.push_back(ev);
    }

    /// Tries to deliver a message; false when the consumer lags. Messages never wait in the
    /// backlog: they are re-read from the server instead. A consumer that dropped its
    /// `Events` counts as having received everything.
    fn try_message(&mut self, entry: Entry) -> bool {
        if !self.backlog.is_empty() {
            return false;
        }
        match self.tx.try_send(Event::Message(entry)) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => true,
            Err(mpsc::error::TrySendError::Full(_)) => false,
        }
    }

    /// Moves the backlog (and a `Lagged` note) into the channel as far as it has room.
    /// Returns whether everything went.
    fn drain(&mut self) -> bool {
        while let Some(ev) = self.backlog.pop_front() {
            match self.tx.try_send(ev) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.backlog.clear();
                    self.dropped = 0;
                    return true;
                }
                Err(mpsc::error::TrySendError::Full(ev)) => {
                    self.backlog.push_front(ev);
                    return false;
                }
            }
        }
        if self.dropped > 0 {
            match self.tx.try_send(Event::Lagged {
                dropped: self.dropped,
            }) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => self.dropped = 0,
                Err(mpsc::error::TrySendError::Full(_)) => return false,
            }
        }
        true
    }
}

/// A token bucket on Tokio's clock.
struct Pacer {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Pacer {
    fn new(per_second: f64, burst: u32) -> Pacer {
        Pacer {
            per_second,
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.per_second).min(self.burst);
        self.last = now;
    }

    fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn ready_at(&self) -> Instant {
        let missing = (1.0 - self.tokens).max(0.0);
        self.last + Duration::from_secs_f64(missing / self.per_second)
    }

    /// A new connection is a new server-side session with a full budget.
    fn reset(&mut self) {
        self.tokens = self.burst;
        self.last = Instant::now();
    }
}

/// xorshift64*: jitter only, seeded from the OS.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new() -> Rng {
        let mut seed = [0u8; 8];
        // Jitter does not need good randomness; fall back to the clock if the OS has none.
        if getrandom::fill(&mut seed).is_err() {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x9E37_79B9_7F4A_7C15);
            seed = t.to_le_bytes();
        }
        Rng(u64::from_le_bytes(seed) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Whether a request may be sent again after the connection dropped with it in flight,
/// without the risk of doing it twice (see `docs/PROTOCOL.md` §3 for each request).
fn is_retriable(frame: &ClientFrame) -> bool {
    match frame {
        ClientFrame::Send { client_msg_id, .. } | ClientFrame::SendDirect { client_msg_id, .. } => {
            client_msg_id.is_some()
        }
        // Reads, and writes whose repetition is a no-op: joining or redeeming again replies
        // `room`, read markers never move back, re-adding or re-setting a role changes nothing.
        ClientFrame::Subscribe { .. }
        | ClientFrame::Unsubscribe { .. }
        | ClientFrame::History { .. }
        | ClientFrame::Join { .. }
        | ClientFrame::RedeemInvite { .. }
        | ClientFrame::MarkRead { .. }
        | ClientFrame::Rooms
        | ClientFrame::PublicRooms
        | ClientFrame::Members { .. }
        | ClientFrame::AddMember { .. }
        | ClientFrame::SetRole { .. }
        | ClientFrame::Ping => true,
        // A second `create_room` makes a second room, a second `leave` fails with
        // `not_member`, a second `kick` likewise, a second `create_invite` makes another code.
        _ => false,
    }
}

pub(crate) struct Driver {
    cfg: ClientConfig,
    shared: Arc<Shared>,
    cmds: mpsc::Receiver<Command>,
    events: EventSink,
    next_id: u64,
    outq: VecDeque<Queued>,
    pending: BTreeMap<u64, Queued>,
    rooms: BTreeMap<RoomId, Track>,
    pacer: Option<Pacer>,
    rng: Rng,
    resume: Option<ResumeProgress>,
    keepalive: Keepalive,
    last_inbound: Instant,
    /// A TCP server's last word before it closes (see [`Ended::from_farewell`]).
    farewell: Option<Ended>,
    /// Nothing is written before this: the server answered one of our own resubscriptions
    /// `rate_limited`, and retrying at once would only be refused again (and, refused often
    /// enough, closed as a policy violation).
    hold: Option<Instant>,
}

impl Driver {
    pub(crate) fn new(
        cfg: ClientConfig,
        shared: Arc<Shared>,
        cmds: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
    ) -> Driver {
        let pacer = cfg.pacing.map(|p| Pacer::new(p.per_second, p.burst));
        Driver {
            cfg,
            shared,
            cmds,
            events: EventSink {
                tx: events,
                backlog: VecDeque::new(),
                dropped: 0,
            },
            next_id: 1,
            outq: VecDeque::new(),
            pending: BTreeMap::new(),
            rooms: BTreeMap::new(),
            pacer,
            rng: Rng::new(),
            resume: None,
            keepalive: Keepalive::Idle,
            last_inbound: Instant::now(),
            farewell: None,
            hold: None,
        }
    }

    /// Runs until the client is closed for good.
    pub(crate) async fn run(mut self, mut conn: Conn) {
        let reason = loop {
            match self.serve(&mut conn).await {
                Outcome::Closed => {
                    conn.close().await;
                    break CloseReason::Closed;
                }
                Outcome::Terminal(reason) => break reason,
                Outcome::Lost(ended) => {
                    tracing::info!(reason = %ended.describe(), "connection lost");
                    drop(conn);
                    self.on_lost();
                    match self.reconnect(ended).await {
                        Ok(c) => conn = c,
                        Err(reason) => break reason,
                    }
                }
            }
        };
        self.finish(reason);
    }

    /// One connected period.
    async fn serve(&mut self, conn: &mut Conn) -> Outcome {
        let mut ticks = tokio::time::interval_at(
            Instant::now() + self.cfg.keepalive_interval,
            self.cfg.keepalive_interval,
        );
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        self.keepalive = Keepalive::Idle;
        self.last_inbound = Instant::now();
        self.farewell = None;
        let max = self.cfg.max_in_flight;
        let cap = self.cfg.event_capacity;
        loop {
            if let Err(ended) = self.write_ready(conn).await {
                return Outcome::Lost(ended);
            }
            let take_cmds = self.outq.len() + self.pending.len() < max;
            let hold_until = self.hold.filter(|_| !self.outq.is_empty());
            // While held, only the hold's end matters: the pacer may be ready already, and
            // waking for it would spin until the hold ends.
            let pace_until = match &self.pacer {
                Some(p)
                    if hold_until.is_none()
                        && !self.outq.is_empty()
                        && self.pending.len() < max =>
                {
                    Some(p.ready_at())
                }
                _ => None,
            };
            let lagging = self.rooms.values().any(|t| t.state == RoomState::Lagging);
            let drain_want = if !self.events.backlog.is_empty() || self.events.dropped > 0 {
                Some(1)
            } else if lagging {
                // Wait until half the channel is free, so a consumer that lags for good does
                // not make the client resubscribe after every message it reads.
                Some((cap / 2).max(1))
            } else {
                None
            };
            // Not `biased`: under a flood of incoming frames, commands, the event drain and
            // the keepalive still get their turn.
            tokio::select! {
                incoming = conn.recv() => {
                    self.last_inbound = Instant::now();
                    if let Some(outcome) = self.on_incoming(incoming) {
                        return outcome;
                    }
                    // One socket read usually brings several frames. Handle those already
                    // here before going back to the `select!`, whose every round polls the
                    // close, the commands and the keepalive timer. Bounded, so that replies
                    // still free `max_in_flight` slots for the next writes soon.
                    for _ in 1..MAX_BURST {
                        // `now_or_never` polls once; a read that would wait is dropped,
                        // which `Conn::recv` allows, and the `select!` polls it again with
                        // the task's own waker.
                        let Some(incoming) = conn.recv().now_or_never() else {
                            break;
                        };
                        if let Some(outcome) = self.on_incoming(incoming) {
                            return outcome;
                        }
                    }
                }
                () = self.shared.close.notified() => return Outcome::Closed,
                cmd = self.cmds.recv(), if take_cmds => match cmd {
                    None => return Outcome::Closed,
                    Some(Command::Request { frame, reply }) => {
                        self.outq.push_back(Queued { frame, kind: Kind::User { reply, retries: 0 } });
                    }
                    Some(Command::Fire(frame)) => {
                        if let Err(ended) = self.fire(conn, frame).await {
                            return Outcome::Lost(ended);
                        }
                    }
                },
                () = wait_capacity(self.events.tx.clone(), drain_want.unwrap_or(1).min(cap)), if drain_want.is_some() => {
                    self.on_capacity();
                }
                _ = tokio::time::sleep_until(pace_until.unwrap_or_else(Instant::now)), if pace_until.is_some() => {}
                _ = tokio::time::sleep_until(hold_until.unwrap_or_else(Instant::now)), if hold_until.is_some() => {}
                _ = ticks.tick() => {
                    match self.keepalive {
                        // Nothing at all arrived since the last ping went out: dead.
                        Keepalive::Sent { at } if self.last_inbound < at => {
                            return Outcome::Lost(Ended {
                                code: None,
                                reason: format!(
                                    "no reply to a ping within {:?}",
                                    self.cfg.keepalive_interval
                                ),
                            });
                        }
                        // Its reply is behind other traffic: the connection is alive.
                        Keepalive::Sent { .. } => {}
                        Keepalive::Idle => {
                            if let Err(ended) = self.ping(conn).await {
                                return Outcome::Lost(ended);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Writes queued requests as far as the pacer and `max_in_flight` allow, then flushes.
    async fn write_ready(&mut self, conn: &mut Conn) -> Result<(), Ended> {
        let deadline = self.cfg.request_timeout;
        let mut wrote = false;
        match self.hold {
            Some(until) if Instant::now() < until => return Ok(()),
            _ => self.hold = None,
        }
        while self.pending.len() < self.cfg.max_in_flight {
            let Some(front) = self.outq.front() else {
                break;
            };
            if let Kind::User { reply, .. } = &front.kind {
                if reply.is_closed() {
                    // The caller gave up (timeout): do not send what nobody waits for.
                    self.outq.pop_front();
                    continue;
                }
            }
            if let Some(p) = &mut self.pacer {
                if !p.try_take(Instant::now()) {
                    break;
                }
            }
            let Some(q) = self.outq.pop_front() else {
                break;
            };
            let id = self.next_id;
            self.next_id += 1;
            let req = Request {
                id: Some(id),
                frame: q.frame.clone(),
            };
            match tokio::time::timeout(deadline, conn.feed(&req)).await {
                Ok(Ok(())) => {
                    wrote = true;
                    self.pending.insert(id, q);
                }
                Ok(Err(WriteError::TooLarge { size, max })) => {
                    if let Kind::User { reply, .. } = q.kind {
                        let _ = reply.send(Err(ClientError::RequestTooLarge { size, max }));
                    }
                }
                Ok(Err(WriteError::Broken(ended))) => {
                    self.outq.push_front(q);
                    return Err(ended);
                }
                Err(_) => {
                    self.outq.push_front(q);
                    return Err(stalled(deadline));
                }
            }
        }
        if wrote {
            match tokio::time::timeout(deadline, conn.flush()).await {
                Ok(r) => r?,
                Err(_) => return Err(stalled(deadline)),
            }
        }
        Ok(())
    }

    /// Writes a keepalive ping at once: it bypasses the pacer and `max_in_flight`, so that a
    /// busy client still notices a dead connection. One per interval costs nothing.
    async fn ping(&mut self, conn: &mut Conn) -> Result<(), Ended> {
        let id = self.next_id;
        self.next_id += 1;
        let deadline = self.cfg.request_timeout;
        let req = Request {
            id: Some(id),
            frame: ClientFrame::Ping,
        };
        let write = async {
            match conn.feed(&req).await {
                Ok(()) => conn.flush().await,
                Err(WriteError::TooLarge { .. }) => Ok(()),
                Err(WriteError::Broken(e)) => Err(e),
            }
        };
        match tokio::time::timeout(deadline, write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(stalled(deadline)),
        }
        self.keepalive = Keepalive::Sent { at: Instant::now() };
        self.pending.insert(
            id,
            Queued {
                frame: ClientFrame::Ping,
                kind: Kind::Keepalive,
            },
        );
        Ok(())
    }

    async fn fire(&mut self, conn: &mut Conn, frame: ClientFrame) -> Result<(), Ended> {
        let deadline = self.cfg.request_timeout;
        let req = Request { id: None, frame };
        let write = async {
            match conn.feed(&req).await {
                Ok(()) => conn.flush().await,
                Err(WriteError::TooLarge { .. }) => Ok(()),
                Err(WriteError::Broken(e)) => Err(e),
            }
        };
        match tokio::time::timeout(deadline, write).await {
            Ok(r) => r,
            Err(_) => Err(stalled(deadline)),
        }
    }

    /// Handles one incoming frame; `Some` when the connected period is over. (The caller
    /// has updated `last_inbound`, once per burst of frames rather than per frame.)
    fn on_incoming(&mut self, incoming: Incoming) -> Option<Outcome> {
        match incoming {
            Incoming::Nothing => None,
            Incoming::Ended(ended) => {
                // A close code says it all; a bare end of stream is explained by the farewell.
                let ended = match (ended.code, self.farewell.take()) {
                    (None, Some(farewell)) => farewell,
                    _ => ended,
                };
                Some(classify_end(ended))
            }
            Incoming::Undecodable { id, error } => {
                tracing::debug!(%error, "ignoring an undecodable frame");
                if let Some(q) = id.and_then(|id| self.pending.remove(&id)) {
                    self.on_reply_frame(
                        q,
                        Err(ClientError::Protocol(format!("undecodable reply: {error}"))),
                    );
                }
                None
            }
            Incoming::Response(Response {
                id: Some(id),
                frame,
            }) => {
                match self.pending.remove(&id) {
                    Some(q) => self.on_reply_frame(q, Ok(frame)),
                    None => tracing::debug!(id, "reply to no pending request"),
                }
                None
            }
            Incoming::Response(Response { id: None, frame }) => {
                self.on_event(frame);
                None
            }
        }
    }

    fn on_reply_frame(&mut self, q: Queued, frame: Result<ServerFrame, ClientError>) {
        match q.kind {
            Kind::User { reply, .. } => {
                if let Ok(f) = &frame {
                    self.track_reply(&q.frame, f);
                }
                let result = frame.and_then(|f| match f {
                    ServerFrame::Error { code, message } => {
                        Err(ClientError::Server { code, message })
                    }
                    other => Ok(other),
                });
                let _ = reply.send(result);
            }
            Kind::Keepalive => self.keepalive = Keepalive::Idle,
            Kind::Forget => {}
            Kind::Resume {
                room,
                after_reconnect,
                attempts,
            } => self.on_resume_reply(q.frame, room, after_reconnect, attempts, frame),
        }
    }

    /// Ends the server's subscription to `room`, which this client no longer reads — unless
    /// the application is subscribing to it again, whose request is queued or in flight
    /// (an `unsubscribe` written after it would undo it).
    fn forget(&mut self, room: RoomId) {
        let resubscribing = self.outq.iter().chain(self.pending.values()).any(|q| {
            matches!(
                (&q.kind, &q.frame),
                (Kind::User { .. }, ClientFrame::Subscribe { room: r, .. }) if *r == room
            )
        });
        if !resubscribing {
            self.outq.push_back(Queued {
                frame: ClientFrame::Unsubscribe { room },
                kind: Kind::Forget,
            });
        }
    }

    /// Keeps the per-room tracking in step with the application's own requests.
    fn track_reply(&mut self, req: &ClientFrame, reply: &ServerFrame) {
        match (req, reply) {
            (ClientFrame::Subscribe { room, .. }, ServerFrame::Subscribed { latest_seq, .. }) => {
                // The replay went to the caller; live messages start after `latest_seq`.
                self.rooms.insert(
                    *room,
                    Track {
                        last_seen: *latest_seq,
                        state: RoomState::Live,
                    },
                );
            }
            // A failed subscribe leaves an existing subscription as it was (PROTOCOL.md,
            // `subscribe`), so only these end the tracking (and `unsubscribed`, below).
            (ClientFrame::Unsubscribe { room }, ServerFrame::Ok)
            | (ClientFrame::Leave { room }, ServerFrame::Ok) => {
                self.rooms.remove(room);
            }
            _ => {}
        }
    }

    fn on_resume_reply(
        &mut self,
        frame: ClientFrame,
        room: RoomId,
        after_reconnect: bool,
        attempts: u32,
        reply: Result<ServerFrame, ClientError>,
    ) {
        let mut ok = false;
        match reply {
            Ok(ServerFrame::Subscribed {
                entries,
                latest_seq,
                gap,
                ..
            }) => {
                ok = true;
                if let Some(t) = self.rooms.get_mut(&room) {
                    t.state = RoomState::Live;
                    if let Some(range) = gap {
                        // Announced once: if the replay below lags, the next resync starts
                        // after the gap, not where this one did (which would announce it
                        // again).
                        t.last_seen = t.last_seen.max(range.to);
                        self.events.emit(Event::Gap { room, range });
                    }
                    for e in entries {
                        self.deliver(e);
                    }
                    if let Some(t) = self.rooms.get_mut(&room) {
                        if t.state == RoomState::Live && t.last_seen < latest_seq {
                            t.last_seen = latest_seq;
                        }
                    }
                } else {
                    // The application unsubscribed (or left a public room) while this was on
                    // its way: the server has subscribed the room again, for nobody.
                    self.forget(room);
                }
            }
            Ok(ServerFrame::Error { code, .. })
                if is_passing(code) && attempts + 1 < MAX_RESUME_ATTEMPTS =>
            {
                // Back off before writing anything more: 250 ms, 0.5 s, 1 s, 2 s (a server's
                // request bucket refills at its sustained rate, 20 per second by default; a
                // store that failed needs a moment).
                let backoff = RESUME_BACKOFF * 2u32.pow(attempts.min(6));
                let until = Instant::now() + backoff.mul_f64(1.0 + 0.25 * self.rng.unit());
                self.hold = Some(self.hold.map_or(until, |h| h.max(until)));
                self.outq.push_back(Queued {
                    frame,
                    kind: Kind::Resume {
                        room,
                        after_reconnect,
                        attempts: attempts + 1,
                    },
                });
                return;
            }
            other => {
                let (code, message) = match other {
                    Ok(ServerFrame::Error { code, message }) => (code, message),
                    Ok(f) => (ErrorCode::Internal, format!("unexpected reply {f:?}")),
                    Err(e) => (ErrorCode::Internal, e.to_string()),
                };
                tracing::warn!(%room, code = code.as_str(), %message, "could not resume a room");
                self.rooms.remove(&room);
                if !after_reconnect {
                    // A refused re-subscribe leaves the server's subscription as it was, and
                    // this client no longer reads the room: end it there too.
                    self.forget(room);
                }
                self.events.emit(Event::ResumeFailed {
                    room,
                    code,
                    message,
                });
            }
        }
        if after_reconnect {
            if let Some(p) = &mut self.resume {
                p.outstanding = p.outstanding.saturating_sub(1);
                if ok {
                    p.resumed += 1;
                } else {
                    p.failed += 1;
                }
                if p.outstanding == 0 {
                    let ev = Event::Reconnected {
                        session: p.session,
                        resumed: p.resumed,
                        failed: p.failed,
                    };
                    self.resume = None;
                    self.events.emit(ev);
                }
            }
        }
    }

    fn on_event(&mut self, frame: ServerFrame) {
        let ev = match frame {
            ServerFrame::Message(entry) => {
                self.deliver(entry);
                return;
            }
            ServerFrame::Unsubscribed { room, reason } => {
                self.rooms.remove(&room);
                Event::Unsubscribed { room, reason }
            }
            ServerFrame::Presence { room, user, online } => Event::Presence { room, user, online },
            ServerFrame::Typing { room, user } => Event::Typing { room, user },
            ServerFrame::MemberChanged { room, user, change } => {
                Event::MemberChanged { room, user, change }
            }
            ServerFrame::Room { room } => Event::Room(room),
            ServerFrame::Notice { room, body } => Event::Notice { room, body },
            ServerFrame::Error { code, message } => match Ended::from_farewell(&message) {
                Some(farewell) => {
                    self.farewell = Some(farewell);
                    return;
                }
                None => Event::ServerError { code, message },
            },
            other => {
                tracing::debug!(?other, "ignoring an unexpected event");
                return;
            }
        };
        self.events.emit(ev);
    }

    /// Delivers a room entry at most once, in seq order: entries at or below the last seq
    /// delivered are duplicates; a room that lags or is being resynced drops them (its
    /// resubscription replays them).
    fn deliver(&mut self, entry: Entry) {
        let Some(track) = self.rooms.get_mut(&entry.room) else {
            // Not (or no longer) subscribed through this client.
            return;
        };
        if track.state != RoomState::Live || entry.seq <= track.last_seen {
            return;
        }
        let seq = entry.seq;
        if self.events.try_message(entry) {
            track.last_seen = seq;
        } else {
            track.state = RoomState::Lagging;
        }
    }

    /// The consumer made room: hand over the backlog, then resynchronise lagging rooms.
    fn on_capacity(&mut self) {
        if !self.events.drain() {
            return;
        }
        let lagging: Vec<(RoomId, Seq)> = self
            .rooms
            .iter()
            .filter(|(_, t)| t.state == RoomState::Lagging)
            .map(|(r, t)| (*r, t.last_seen))
            .collect();
        for (room, since) in lagging.into_iter().rev() {
            if let Some(t) = self.rooms.get_mut(&room) {
                t.state = RoomState::Resyncing;
            }
            self.outq.push_front(Queued {
                frame: ClientFrame::Subscribe {
                    room,
                    since_seq: Some(since),
                },
                kind: Kind::Resume {
                    room,
                    after_reconnect: false,
                    attempts: 0,
                },
            });
        }
    }

    /// The connection is gone: decide the fate of every request that was in flight.
    fn on_lost(&mut self) {
        self.resume = None;
        self.keepalive = Keepalive::Idle;
        let mut again = Vec::new();
        for (_, q) in std::mem::take(&mut self.pending) {
            if let Kind::User { reply, retries } = q.kind {
                if reply.is_closed() {
                    continue;
                }
                if is_retriable(&q.frame) && retries < self.cfg.max_request_retries {
                    again.push(Queued {
                        frame: q.frame,
                        kind: Kind::User {
                            reply,
                            retries: retries + 1,
                        },
                    });
                } else {
                    // A `leave` that may or may not have happened: the application asked to
                    // be out of the room, so the reconnection does not resubscribe it (for a
                    // public room it would follow a room the user left). It can ask again.
                    if let ClientFrame::Leave { room } = &q.frame {
                        self.rooms.remove(room);
                    }
                    let _ = reply.send(Err(ClientError::ConnectionLost));
                }
            }
            // Resubscriptions and pings are recomputed for the next connection.
        }
        self.outq.retain(|q| matches!(q.kind, Kind::User { .. }));
        for q in again.into_iter().rev() {
            self.outq.push_front(q);
        }
        for t in self.rooms.values_mut() {
            t.state = RoomState::Resyncing;
        }
    }

    /// Reconnects with capped, jittered backoff, serving commands meanwhile.
    async fn reconnect(&mut self, first: Ended) -> Result<Conn, CloseReason> {
        let policy = self.cfg.reconnect.clone();
        let mut last = first.describe();
        for attempt in 1..=policy.max_attempts {
            let mut delay = policy.delay(attempt, self.rng.unit());
            if attempt == 1 && first.code == Some(CLOSE_POLICY) {
                delay = delay.max(policy.policy_violation_delay);
            }
            self.events.emit(Event::Disconnected {
                reason: last.clone(),
                attempt,
                retry_in: delay,
            });
            self.offline(tokio::time::sleep(delay)).await?;
            let cfg = self.cfg.clone();
            match self.offline(Conn::open(&cfg)).await? {
                Ok((conn, welcome)) => {
                    tracing::info!(attempt, session = %welcome.session, "reconnected");
                    self.on_reconnected(welcome);
                    return Ok(conn);
                }
                Err(e) => {
                    if let Some(reason) = fatal(&e) {
                        return Err(reason);
                    }
                    tracing::debug!(attempt, error = %e, "reconnection attempt failed");
                    last = e.to_string();
                }
            }
        }
        Err(CloseReason::GaveUp {
            attempts: policy.max_attempts,
            last_error: last,
        })
    }

    /// Awaits `fut` while disconnected: requests queue up (bounded), typing is dropped, the
    /// event backlog keeps draining. `Err` when the client is closed meanwhile.
    async fn offline<F: Future>(&mut self, fut: F) -> Result<F::Output, CloseReason> {
        let mut fut = pin!(fut);
        loop {
            let take_cmds = self.outq.len() < self.cfg.max_in_flight;
            let drain = !self.events.backlog.is_empty() || self.events.dropped > 0;
            tokio::select! {
                out = &mut fut => return Ok(out),
                () = self.shared.close.notified() => return Err(CloseReason::Closed),
                cmd = self.cmds.recv(), if take_cmds => match cmd {
                    None => return Err(CloseReason::Closed),
                    Some(Command::Request { frame, reply }) => {
                        self.outq.push_back(Queued { frame, kind: Kind::User { reply, retries: 0 } });
                    }
                    Some(Command::Fire(_)) => {}
                },
                () = wait_capacity(self.events.tx.clone(), 1), if drain => {
                    self.events.drain();
                }
            }
        }
    }

    /// A new session: resubscribe every room from the last seq delivered, ahead of the
    /// requests that waited.
    fn on_reconnected(&mut self, welcome: Welcome) {
        let session = welcome.session;
        *self
            .shared
            .welcome
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = welcome;
        if let Some(p) = &mut self.pacer {
            p.reset();
        }
        let rooms: Vec<(RoomId, Seq)> = self.rooms.iter().map(|(r, t)| (*r, t.last_seen)).collect();
        for (room, since) in rooms.iter().rev() {
            self.outq.push_front(Queued {
                frame: ClientFrame::Subscribe {
                    room: *room,
                    since_seq: Some(*since),
                },
                kind: Kind::Resume {
                    room: *room,
                    after_reconnect: true,
                    attempts: 0,
                },
            });
        }
        if rooms.is_empty() {
            self.events.emit(Event::Reconnected {
                session,
                resumed: 0,
                failed: 0,
            });
        } else {
            self.resume = Some(ResumeProgress {
                session,
                outstanding: rooms.len(),
                resumed: 0,
                failed: 0,
            });
        }
    }

    /// The end: every waiting caller learns why, the event stream ends with the reason.
    fn finish(mut self, reason: CloseReason) {
        tracing::info!(%reason, "client closed");
        let _ = self.shared.closed.set(reason.clone());
        let fail = |kind: Kind| {
            if let Kind::User { reply, .. } = kind {
                let _ = reply.send(Err(ClientError::Closed(reason.clone())));
            }
        };
        for (_, q) in std::mem::take(&mut self.pending) {
            fail(q.kind);
        }
        for q in std::mem::take(&mut self.outq) {
            fail(q.kind);
        }
        self.cmds.close();
        while let Ok(cmd) = self.cmds.try_recv() {
            if let Command::Request { reply, .. } = cmd {
                let _ = reply.send(Err(ClientError::Closed(reason.clone())));
            }
        }
        // What still fits; the stream then yields `Closed(reason)` and ends.
        self.events.drain();
    }
}

/// Resolves once the event channel has room for `n` more events (or is closed). The driver is
/// the channel's only sender, so the room is still there when it acts on it.
async fn wait_capacity(tx: mpsc::Sender<Event>, n: usize) {
    let _ = tx.reserve_many(n).await;
}

fn stalled(deadline: Duration) -> Ended {
    Ended {
        code: None,
        reason: format!("a write did not complete within {deadline:?}"),
    }
}

/// What the end of a connection means: close codes 4401 stop the client, anything else is a
/// drop to recover from.
fn classify_end(ended: Ended) -> Outcome {
    if ended.code == Some(CLOSE_REVOKED) {
        if ended.reason.starts_with("unauthenticated") {
            return Outcome::Terminal(CloseReason::AuthFailed {
                code: ErrorCode::Unauthenticated,
                message: ended.describe(),
            });
        }
        return Outcome::Terminal(CloseReason::Revoked);
    }
    Outcome::Lost(ended)
}

/// Whether a failed reconnection attempt must stop the client.
fn fatal(e: &ClientError) -> Option<CloseReason> {
    match e {
        ClientError::Server { code, message } if is_auth_code(*code) => {
            Some(CloseReason::AuthFailed {
                code: *code,
                message: message.clone(),
            })
        }
        ClientError::Closed(reason) => Some(reason.clone()),
        ClientError::Refused {
            status: 401,
            message,
        } => Some(CloseReason::AuthFailed {
            code: ErrorCode::InvalidToken,
            message: message.clone(),
        }),
        ClientError::Refused {
            status: 400 | 403 | 404 | 405 | 426,
            message,
        } => Some(CloseReason::Refused {
            message: message.clone(),
        }),
        ClientError::Config(message) => Some(CloseReason::Refused {
            message: message.clone(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_core::protocol::SeqRange;

    fn entry(room: u64, seq: u64) -> Entry {
        Entry {
            room: RoomId(room),
            seq: Seq(seq),
            at: chat_core::Timestamp(0),
            sender: None,
            sender_name: "system".into(),
            body: format!("m{seq}"),
            client_msg_id: None,
        }
    }

    fn driver(capacity: usize) -> (Driver, mpsc::Receiver<Event>) {
        let mut cfg = ClientConfig::new(
            crate::Transport::Tcp("127.0.0.1:1".into()),
            crate::Auth::Guest("x".into()),
        );
        cfg.event_capacity = capacity;
        let (_cmd_tx, cmd_rx) = mpsc::channel(1);
        let (tx, rx) = mpsc::channel(capacity);
        let shared = Arc::new(Shared {
            closed: Arc::new(OnceLock::new()),
            close: Notify::new(),
            welcome: Mutex::new(Welcome {
                session: SessionId(1),
                user: chat_core::protocol::UserInfo {
                    id: chat_core::UserId(1),
                    username: "x".into(),
                },
                limits: chat_core::protocol::WireLimits {
                    max_body_bytes: 1,
                    max_replay: 1,
                    max_history_page: 1,
                },
                token: None,
            }),
        });
        (Driver::new(cfg, shared, cmd_rx, tx), rx)
    }

    fn seqs(rx: &mut mpsc::Receiver<Event>) -> Vec<u64> {
        let mut out = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            if let Event::Message(e) = ev {
                out.push(e.seq.0);
            }
        }
        out
    }

    fn subscribed(d: &mut Driver, room: u64, latest: u64) {
        d.rooms.insert(
            RoomId(room),
            Track {
                last_seen: Seq(latest),
                state: RoomState::Live,
            },
        );
    }

    #[tokio::test]
    async fn duplicates_and_old_entries_are_dropped() {
        let (mut d, mut rx) = driver(16);
        subscribed(&mut d, 1, 2);
        for s in [1, 2, 3, 3, 4, 2, 5] {
            d.deliver(entry(1, s));
        }
        d.deliver(entry(9, 1)); // not subscribed
        assert_eq!(seqs(&mut rx), [3, 4, 5]);
    }

    #[tokio::test]
    async fn a_refused_resubscribe_keeps_the_room_and_unsubscribed_ends_it() {
        let (mut d, mut rx) = driver(16);
        subscribed(&mut d, 1, 2);
        let again = ClientFrame::Subscribe {
            room: RoomId(1),
            since_seq: None,
        };
        let refused = ServerFrame::Error {
            code: ErrorCode::NotMember,
            message: "not a member".into(),
        };
        d.track_reply(&again, &refused);
        d.deliver(entry(1, 3));
        assert_eq!(seqs(&mut rx), [3], "the subscription carries on");
        d.on_event(ServerFrame::Unsubscribed {
            room: RoomId(1),
            reason: chat_core::protocol::UnsubscribeReason::Kicked,
        });
        d.deliver(entry(1, 4));
        assert!(!d.rooms.contains_key(&RoomId(1)));
        assert!(seqs(&mut rx).is_empty());
    }

    #[tokio::test]
    async fn a_resync_the_server_refuses_unsubscribes_the_room_there_too() {
        let (mut d, _rx) = driver(16);
        subscribed(&mut d, 1, 2);
        let resync = ClientFrame::Subscribe {
            room: RoomId(1),
            since_seq: Some(Seq(2)),
        };
        let failed = || {
            Ok(ServerFrame::Error {
                code: ErrorCode::NotMember,
                message: "not a member".into(),
            })
        };
        d.on_resume_reply(resync.clone(), RoomId(1), false, 0, failed());
        assert!(!d.rooms.contains_key(&RoomId(1)));
        let queued: Vec<&ClientFrame> = d.outq.iter().map(|q| &q.frame).collect();
        assert_eq!(queued, [&ClientFrame::Unsubscribe { room: RoomId(1) }]);
        // After a reconnection the new session never had the room: nothing to undo.
        d.outq.clear();
        subscribed(&mut d, 1, 2);
        d.on_resume_reply(resync, RoomId(1), true, 0, failed());
        assert!(d.outq.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limited_resync_waits_longer_each_time_before_anything_is_written() {
        resync_backs_off_after(ErrorCode::RateLimited);
    }

    #[tokio::test(start_paused = true)]
    async fn a_resync_that_met_a_failing_store_is_tried_again_later() {
        resync_backs_off_after(ErrorCode::StorageError);
    }

    fn resync_backs_off_after(code: ErrorCode) {
        let (mut d, _rx) = driver(16);
        subscribed(&mut d, 1, 2);
        let resync = ClientFrame::Subscribe {
            room: RoomId(1),
            since_seq: Some(Seq(2)),
        };
        let limited = || {
            Ok(ServerFrame::Error {
                code,
                message: "not now".into(),
            })
        };
        let mut waits = Vec::new();
        for attempt in 0..MAX_RESUME_ATTEMPTS - 1 {
            d.hold = None;
            let before = Instant::now();
            d.on_resume_reply(resync.clone(), RoomId(1), false, attempt, limited());
            waits.push(d.hold.expect("held") - before);
            assert_eq!(d.outq.len(), 1, "queued again");
            d.outq.clear();
        }
        for pair in waits.windows(2) {
            assert!(pair[1] > pair[0], "{waits:?}");
        }
        assert!(waits[0] >= RESUME_BACKOFF, "{waits:?}");
        // The last attempt gives up (and unsubscribes the room on the server).
        d.on_resume_reply(resync, RoomId(1), false, MAX_RESUME_ATTEMPTS - 1, limited());
        assert!(!d.rooms.contains_key(&RoomId(1)));
    }

    #[tokio::test]
    async fn a_gap_is_announced_once_even_when_its_replay_lags() {
        let (mut d, mut rx) = driver(2);
        subscribed(&mut d, 1, 0);
        d.rooms.get_mut(&RoomId(1)).unwrap().state = RoomState::Resyncing;
        let resync = ClientFrame::Subscribe {
            room: RoomId(1),
            since_seq: Some(Seq(0)),
        };
        let reply = ServerFrame::Subscribed {
            room: RoomId(1),
            entries: (501..=510).map(|s| entry(1, s)).collect(),
            latest_seq: Seq(510),
            gap: Some(SeqRange {
                from: Seq(1),
                to: Seq(500),
            }),
        };
        // The consumer is behind: the channel (2) is full before the reply arrives, so the
        // gap waits in the backlog and the whole replay lags.
        for _ in 0..2 {
            d.events.emit(Event::Notice {
                room: None,
                body: "busy".into(),
            });
        }
        d.on_resume_reply(resync, RoomId(1), false, 0, Ok(reply));
        assert_eq!(d.rooms[&RoomId(1)].state, RoomState::Lagging);
        let mut gaps = 0;
        while let Ok(ev) = rx.try_recv() {
            gaps += matches!(ev, Event::Gap { .. }) as usize;
        }
        d.events.drain();
        while let Ok(ev) = rx.try_recv() {
            gaps += matches!(ev, Event::Gap { .. }) as usize;
        }
        assert_eq!(gaps, 1);
        d.on_capacity();
        let next = &d.outq.front().expect("a resync").frame;
        match next {
            ClientFrame::Subscribe {
                since_seq: Some(s), ..
            } => assert!(*s >= Seq(500), "resyncs after the gap, from {s:?}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_resync_answered_after_the_application_unsubscribed_is_undone() {
        let (mut d, _rx) = driver(16);
        // Not tracked: the application's `unsubscribe` was answered before this reply.
        let resync = ClientFrame::Subscribe {
            room: RoomId(1),
            since_seq: Some(Seq(2)),
        };
        let reply = ServerFrame::Subscribed {
            room: RoomId(1),
            entries: vec![entry(1, 3)],
            latest_seq: Seq(3),
            gap: None,
        };
        d.on_resume_reply(resync, RoomId(1), false, 0, Ok(reply));
        assert!(!d.rooms.contains_key(&RoomId(1)));
        let queued: Vec<&ClientFrame> = d.outq.iter().map(|q| &q.frame).collect();
        assert_eq!(queued, [&ClientFrame::Unsubscribe { room: RoomId(1) }]);
    }

    #[tokio::test]
    async fn no_unsubscribe_is_queued_behind_the_applications_own_subscribe() {
        let (mut d, _rx) = driver(16);
        let (reply, _wait) = tokio::sync::oneshot::channel();
        d.outq.push_back(Queued {
            frame: ClientFrame::Subscribe {
                room: RoomId(1),
                since_seq: None,
            },
            kind: Kind::User { reply, retries: 0 },
        });
        let reply = ServerFrame::Subscribed {
            room: RoomId(1),
            entries: vec![],
            latest_seq: Seq(3),
            gap: None,
        };
        let resync = ClientFrame::Subscribe {
            room: RoomId(1),
            since_seq: Some(Seq(2)),
        };
        d.on_resume_reply(resync, RoomId(1), false, 0, Ok(reply));
        assert_eq!(d.outq.len(), 1, "only the application's subscribe");
    }

    #[tokio::test]
    async fn a_leave_lost_with_the_connection_is_not_resubscribed() {
        let (mut d, _rx) = driver(16);
        subscribed(&mut d, 1, 2);
        subscribed(&mut d, 2, 2);
        let (reply, answer) = tokio::sync::oneshot::channel();
        d.pending.insert(
            7,
            Queued {
                frame: ClientFrame::Leave { room: RoomId(1) },
                kind: Kind::User { reply, retries: 0 },
            },
        );
        d.on_lost();
        assert!(matches!(answer.await, Ok(Err(ClientError::ConnectionLost))));
        assert!(!d.rooms.contains_key(&RoomId(1)), "not followed any more");
        assert!(d.rooms.contains_key(&RoomId(2)), "the other room is");
    }

    #[tokio::test]
    async fn a_lagging_room_is_resynced_from_the_last_delivered_seq() {
        let (mut d, mut rx) = driver(2);
        subscribed(&mut d, 1, 0);
        for s in 1..=5 {
            d.deliver(entry(1, s));
        }
        assert_eq!(d.rooms[&RoomId(1)].state, RoomState::Lagging);
        assert_eq!(d.rooms[&RoomId(1)].last_seen, Seq(2));
        assert_eq!(seqs(&mut rx), [1, 2]);
        d.on_capacity();
        let frame = d
            .outq
            .front()
            .expect("a resubscription is queued")
            .frame
            .clone();
        assert_eq!(
            frame,
            ClientFrame::Subscribe {
                room: RoomId(1),
                since_seq: Some(Seq(2))
            }
        );
        // Old-subscription messages in flight are ignored while resyncing.
        d.deliver(entry(1, 3));
        assert!(seqs(&mut rx).is_empty());
        d.on_resume_reply(
            frame,
            RoomId(1),
            false,
            0,
            Ok(ServerFrame::Subscribed {
                room: RoomId(1),
                entries: (3..=6).map(|s| entry(1, s)).collect(),
                latest_seq: Seq(6),
                gap: None,
            }),
        );
        // Room for two again: 3 and 4 go, 5 lags again.
        assert_eq!(seqs(&mut rx), [3, 4]);
        assert_eq!(d.rooms[&RoomId(1)].last_seen, Seq(4));
        assert_eq!(d.rooms[&RoomId(1)].state, RoomState::Lagging);
    }

    #[tokio::test]
    async fn ephemeral_events_are_dropped_and_counted_others_wait() {
        let (mut d, mut rx) = driver(1);
        let user = chat_core::protocol::UserInfo {
            id: chat_core::UserId(2),
            username: "b".into(),
        };
        d.events.emit(Event::Notice {
            room: None,
            body: "fills the channel".into(),
        });
        d.events.emit(Event::Typing {
            room: RoomId(1),
            user,
        });
        d.events.emit(Event::Gap {
            room: RoomId(1),
            range: SeqRange {
                from: Seq(1),
                to: Seq(2),
            },
        });
        assert_eq!((d.events.dropped, d.events.backlog.len()), (1, 1));
        assert!(matches!(rx.try_recv(), Ok(Event::Notice { .. })));
        assert!(!d.events.drain(), "no room yet for the Lagged note");
        assert_eq!(d.events.dropped, 1);
        assert!(matches!(rx.try_recv(), Ok(Event::Gap { .. })));
        assert!(d.events.drain());
        assert_eq!(rx.try_recv().ok(), Some(Event::Lagged { dropped: 1 }));
    }

    #[test]
    fn only_requests_safe_to_repeat_are_retried() {
        let send = |id: Option<&str>| ClientFrame::Send {
            room: RoomId(1),
            body: "x".into(),
            client_msg_id: id.map(String::from),
        };
        assert!(is_retriable(&send(Some("c-1"))));
        assert!(!is_retriable(&send(None)));
        assert!(is_retriable(&ClientFrame::Rooms));
        assert!(!is_retriable(&ClientFrame::Leave { room: RoomId(1) }));
        assert!(!is_retriable(&ClientFrame::CreateRoom {
            name: "x".into(),
            kind: chat_core::RoomKind::Public
        }));
    }

    #[test]
    fn revocation_stops_and_other_closes_reconnect() {
        let end = |code, reason: &str| Ended {
            code,
            reason: reason.into(),
        };
        assert!(matches!(
            classify_end(end(Some(4401), "revoked")),
            Outcome::Terminal(CloseReason::Revoked)
        ));
        assert!(matches!(
            classify_end(end(Some(4401), "unauthenticated")),
            Outcome::Terminal(CloseReason::AuthFailed { .. })
        ));
        let tcp = Ended::from_farewell("revoked: the session was revoked").unwrap();
        assert!(matches!(
            classify_end(tcp),
            Outcome::Terminal(CloseReason::Revoked)
        ));
        let tcp = Ended::from_farewell("policy_violation: kept sending while rate limited");
        assert_eq!(tcp.map(|e| e.code), Some(Some(CLOSE_POLICY)));
        assert!(Ended::from_farewell("not_member: something else").is_none());
        assert!(Ended::from_farewell("no colon").is_none());
        for code in [Some(1001), Some(1013), Some(1008), None] {
            assert!(matches!(classify_end(end(code, "x")), Outcome::Lost(_)));
        }
        assert!(
            fatal(&ClientError::Server {
                code: ErrorCode::InvalidToken,
                message: String::new()
            })
            .is_some()
        );
        assert!(
            fatal(&ClientError::Refused {
                status: 503,
                message: String::new()
            })
            .is_none()
        );
        assert!(fatal(&ClientError::Transport("eof".into())).is_none());
    }

    #[test]
    fn the_pacer_spends_its_burst_then_waits() {
        let mut p = Pacer::new(10.0, 3);
        let now = p.last;
        assert!(p.try_take(now) && p.try_take(now) && p.try_take(now));
        assert!(!p.try_take(now));
        assert!(p.ready_at() > now);
        assert!(p.try_take(now + Duration::from_millis(100)));
    }
}
