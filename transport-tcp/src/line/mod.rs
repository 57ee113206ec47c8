//! Line mode: a person at `nc` or `telnet`, on the same sessions and the same pump as every
//! other client.
//!
//! Before signing in, the connection is a small loop of its own (`/login`, `/nick`, `/help`,
//! `/quit`). After it, it is an ordinary session run by `chat_core::conn::pump`:
//!
//! - [`LineReader`] is the pump's `FrameReader`. It turns each typed line into protocol
//!   requests — the same postcard frames a binary client sends, so the session decodes,
//!   rate-limits and executes them exactly as it would any other client's — and hands them to
//!   the pump one at a time.
//! - [`LineWriter`] is the pump's `FrameWriter`. It renders each frame the session queues as
//!   text (see [`render`]), and reports the outcome of each request back to the reader.
//!
//! **One command at a time.** The reader sends a command's request, then waits until the
//! writer has written its reply to the socket before it reads the next line. Some commands
//! need that anyway (`/create lobby` must learn the new room's id before it can subscribe to
//! it, and the `hello` on the next line is sent to the room `/create` entered), and it makes a
//! terminal session deterministic: the output of a command comes before anything typed after
//! it is acted on, whether the lines arrive one keystroke at a time or pasted all at once.
//! A client that stops reading stops being read (backpressure), and the pump's write timeout
//! and queue limit cut it off as for any other client.
//!
//! **Output of its own** (help, usage errors, "you are not in a room") travels as a `ping`
//! whose `pong` the writer renders as that text: it is then ordered with every reply, written
//! by the one writer under the same deadlines, and rate-limited like any other request.
//!
//! **Rate limits.** Every line costs the session's request budget like any request. A refused
//! request is not shown as an error: the reader waits for the budget to refill (one request's
//! worth, `1 / requests_per_second`) and sends it again, so a pasted block goes through at the
//! sustained rate rather than being half-refused — and, because the reader does not read on
//! meanwhile, the socket pushes back on the sender.

mod codec;
mod command;
mod render;

pub use render::sanitize;

use crate::Error;
use crate::close::{CloseCause, linger};
use crate::config::SIGN_IN_REFUSED;
use crate::server::Inner;
use crate::stats::Counters;
use bytes::Bytes;
use chat_core::conn::{CodecChoice, FrameReader, FrameWriter, Inbound, PumpEnd, pump};
use chat_core::protocol::{ClientFrame, Hello, HelloAuth, PROTOCOL_VERSION, RequestId};
use chat_core::{Codec, Outbox, Outgoing, Request, RoomId, RoomKind, Seq, Session};
use codec::{LineCodec, LineItem};
use command::{Command, Target};
use futures_util::StreamExt;
use render::{Enter, Followup, Outcome, Pending, State};
use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;

/// Most direct conversations subscribed automatically at sign-in, so that direct messages
/// reach a person who is in none of the rooms. Bounded so that signing in stays well inside
/// the request budget; the rest show up in `/rooms` with their unread counts.
const MAX_AUTO_WATCH: usize = 16;

/// The state shared by a connection's reader and writer, and the reader's wake-up call.
struct Shared {
    state: Mutex<State>,
    /// Wakes the reader: an outcome was flushed, or a follow-up was queued. One waiter (the
    /// reader); a notification with nobody waiting is kept for the next wait.
    wake: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing here can be left half-updated in a way worse than refusing service.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The outcome of request `id`, once the writer has flushed its reply.
    async fn outcome(&self, id: RequestId) -> Outcome {
        loop {
            {
                let mut st = self.lock();
                if let Some(pos) = st.answered.iter().position(|(i, _)| *i == id) {
                    let (_, outcome) = st.answered.remove(pos).unwrap_or((id, Outcome::Done));
                    // Anything older is for a request nobody waits for any more.
                    st.answered.retain(|(i, _)| *i > id);
                    return outcome;
                }
            }
            self.wake.notified().await;
        }
    }
}

/// A command being carried out: its kind and how many requests it has sent.
struct Job {
    kind: JobKind,
    step: u8,
}

enum JobKind {
    Say(String),
    Send { room: RoomId, body: String },
    Msg { to: String, body: String },
    Join(Target),
    Create(String),
    Leave(RoomId),
    Rooms,
    Who(RoomId),
    History { room: RoomId, limit: u32 },
    SignedIn { direct: VecDeque<RoomId> },
    Watch { room: RoomId, since: Option<Seq> },
}

impl Job {
    fn new(kind: JobKind) -> Job {
        Job { kind, step: 0 }
    }

    fn say(text: String) -> Job {
        Job::new(JobKind::Say(text))
    }

    /// A `ping` that prints nothing: once its `pong` is written, so is everything queued
    /// before it. Used before ending the connection.
    fn barrier() -> Job {
        Job::say(String::new())
    }

    fn error(text: &str) -> Job {
        let mut out = String::new();
        render::error(&mut out, text);
        Job::say(out)
    }

    /// The next request of this job, given the outcome of the previous one (`None` before the
    /// first); `None` when the job is done.
    fn next(&mut self, st: &mut State, last: Option<Outcome>) -> Option<(ClientFrame, Pending)> {
        let step = self.step;
        self.step = self.step.saturating_add(1);
        let subscribe = |room, since_seq| ClientFrame::Subscribe { room, since_seq };
        match (&mut self.kind, step) {
            (JobKind::Say(text), 0) => {
                Some((ClientFrame::Ping, Pending::Say(std::mem::take(text))))
            }
            (JobKind::Send { room, body }, 0) => Some((
                ClientFrame::Send {
                    room: *room,
                    body: std::mem::take(body),
                    client_msg_id: None,
                },
                Pending::Send,
            )),
            (JobKind::Msg { to, body }, 0) => Some((
                ClientFrame::SendDirect {
                    to: std::mem::take(to),
                    body: std::mem::take(body),
                    client_msg_id: None,
                },
                Pending::Send,
            )),
            // Show the conversation (from the message just sent) if it is not shown yet.
            (JobKind::Msg { .. }, 1) => match last {
                Some(Outcome::Sent { room, seq }) if !st.subscribed.contains(&room) => Some((
                    subscribe(room, Some(Seq(seq.0.saturating_sub(1)))),
                    Pending::Watch,
                )),
                _ => None,
            },
            (JobKind::Join(target), 0) => {
                let known = match target {
                    Target::Id(id) => Some(*id).filter(|id| st.rooms.contains_key(id)),
                    Target::Name(name) => st.find(name),
                };
                match known {
                    Some(room) if st.subscribed.contains(&room) => {
                        st.current = Some(room);
                        let mut text = String::new();
                        render::info(
                            &mut text,
                            &format!("you are now talking in {}", st.name(room)),
                        );
                        Some((ClientFrame::Ping, Pending::Say(text)))
                    }
                    Some(room) if st.is_member(room) => {
                        Some((subscribe(room, None), Pending::Enter(Enter::Switched)))
                    }
                    _ => {
                        let (room, name) = match target {
                            Target::Id(id) => (Some(*id), None),
                            Target::Name(name) => (None, Some(name.clone())),
                        };
                        Some((ClientFrame::Join { room, name }, Pending::Join))
                    }
                }
            }
            (JobKind::Join(_), 1) | (JobKind::Create(_), 1) => {
                let enter = match self.kind {
                    JobKind::Create(_) => Enter::Created,
                    _ => Enter::Joined,
                };
                match last {
                    Some(Outcome::Room(info)) => {
                        Some((subscribe(info.id, None), Pending::Enter(enter)))
                    }
                    _ => None,
                }
            }
            (JobKind::Create(name), 0) => Some((
                ClientFrame::CreateRoom {
                    name: std::mem::take(name),
                    kind: RoomKind::Public,
                },
                Pending::Create,
            )),
            (JobKind::Leave(room), 0) => {
                Some((ClientFrame::Leave { room: *room }, Pending::Leave(*room)))
            }
            (JobKind::Rooms, 0) => Some((ClientFrame::Rooms, Pending::MyRooms)),
            (JobKind::Rooms, 1) => match last {
                Some(Outcome::Rooms(_)) => Some((ClientFrame::PublicRooms, Pending::PublicRooms)),
                _ => None,
            },
            (JobKind::Who(room), 0) => Some((ClientFrame::Members { room: *room }, Pending::Who)),
            (JobKind::History { room, limit }, 0) => Some((
                ClientFrame::History {
                    room: *room,
                    before: None,
                    after: None,
                    limit: Some(*limit),
                },
                Pending::History,
            )),
            (JobKind::SignedIn { .. }, 0) => Some((ClientFrame::Rooms, Pending::LoginRooms)),
            (JobKind::SignedIn { direct }, _) => {
                if let Some(Outcome::Rooms(rooms)) = last.filter(|_| step == 1) {
                    direct.extend(
                        rooms
                            .iter()
                            .filter(|r| r.room.kind == RoomKind::Direct)
                            .map(|r| r.room.id)
                            .take(MAX_AUTO_WATCH),
                    );
                }
                let room = direct.pop_front()?;
                Some((subscribe(room, None), Pending::Watch))
            }
            (JobKind::Watch { room, since }, 0) if !st.subscribed.contains(room) => {
                Some((subscribe(*room, *since), Pending::Watch))
            }
            _ => None,
        }
    }
}

/// The pump's reader for a signed-in line-mode connection. See the module docs.
pub(crate) struct LineReader<R> {
    lines: FramedRead<R, LineCodec>,
    shared: Arc<Shared>,
    max_line: usize,
    /// Whether the server lets guests in (for `/help`).
    guests: bool,
    /// The command being carried out.
    job: Option<Job>,
    /// The outcome of the job's last request, for its next step.
    last: Option<Outcome>,
    /// The request whose reply is awaited, kept to send again if it is rate limited.
    inflight: Option<(RequestId, ClientFrame, Pending)>,
    /// A rate-limited request, and when to send it again.
    retry: Option<(Instant, ClientFrame, Pending)>,
    retry_delay: Duration,
    next_id: RequestId,
    /// `/quit` was typed: the connection ends once what was queued before it is written.
    quit: bool,
    /// The peer's input ended: likewise (a half-closed `nc -N` still reads its replies).
    ended: bool,
}

impl<R> LineReader<R> {
    fn issue(&mut self, frame: ClientFrame, pending: Pending) -> Inbound {
        let id = self.next_id;
        self.next_id += 1;
        self.shared.lock().pending.insert(id, pending.clone());
        let bytes = Codec::Postcard.encode_request(&Request {
            id: Some(id),
            frame: frame.clone(),
        });
        self.inflight = Some((id, frame, pending));
        Inbound::Frame {
            codec: Codec::Postcard,
            bytes,
        }
    }

    /// Turns one line from the peer into the job that carries it out.
    fn on_line(&mut self, item: LineItem) {
        let line = match item {
            LineItem::Line(line) => line,
            LineItem::TooLong => {
                let text = format!(
                    "that line is longer than {} bytes; it was discarded",
                    self.max_line
                );
                self.job = Some(Job::error(&text));
                return;
            }
            LineItem::InvalidUtf8 => {
                self.job = Some(Job::error("that line is not valid UTF-8; it was discarded"));
                return;
            }
        };
        let st = self.shared.lock();
        let here = st.current;
        let resolve = |target: Option<Target>| match target {
            None => here.ok_or("you are not in a room: /join <room> first"),
            Some(Target::Id(id)) => Ok(id),
            Some(Target::Name(name)) => st
                .find(&name)
                .ok_or("no room of yours has that name; /rooms lists them"),
        };
        let kind = match Command::parse(&line) {
            Command::Empty => return,
            Command::Help => {
                let mut text = String::new();
                render::help(&mut text, self.guests);
                Ok(JobKind::Say(text))
            }
            Command::Quit => {
                self.quit = true;
                drop(st);
                self.job = Some(Job::barrier());
                return;
            }
            Command::Login { .. } | Command::Nick(_) | Command::Token(_) => Err(format!(
                "you are already signed in as {}",
                st.me.as_deref().map(sanitize).unwrap_or_default()
            )),
            Command::Usage(usage) => Err(usage.to_string()),
            Command::Unknown(name) => Err(format!(
                "unknown command /{}; /help lists the commands",
                sanitize(&name)
            )),
            Command::Say(body) => match here {
                Some(room) => Ok(JobKind::Send { room, body }),
                None => {
                    Err("you are not in a room: /join <room> or /create <room> first".to_string())
                }
            },
            Command::Create(name) => Ok(JobKind::Create(name)),
            Command::Join(target) => Ok(JobKind::Join(target)),
            Command::Leave(target) => resolve(target).map(JobKind::Leave).map_err(str::to_string),
            Command::Who(target) => resolve(target).map(JobKind::Who).map_err(str::to_string),
            Command::Rooms => Ok(JobKind::Rooms),
            Command::Msg { to, body } => Ok(JobKind::Msg { to, body }),
            Command::History(limit) => resolve(None)
                .map(|room| JobKind::History { room, limit })
                .map_err(str::to_string),
        };
        drop(st);
        self.job = Some(match kind {
            Ok(kind) => Job::new(kind),
            Err(text) => Job::error(&text),
        });
    }
}

impl<R: tokio::io::AsyncRead + Unpin + Send> FrameReader for LineReader<R> {
    type Error = Error;

    /// Cancel-safe, as the pump requires: every wait is on a cancel-safe future (a stream's
    /// `next`, `Notify::notified`, a sleep until a stored instant) and all progress is kept in
    /// `self` before the next wait.
    async fn read(&mut self) -> Result<Option<Inbound>, Error> {
        loop {
            if let Some((id, _, _)) = &self.inflight {
                let outcome = self.shared.outcome(*id).await;
                let Some((_, frame, pending)) = self.inflight.take() else {
                    continue;
                };
                if outcome == Outcome::RateLimited {
                    self.retry = Some((Instant::now() + self.retry_delay, frame, pending));
                } else {
                    self.last = Some(outcome);
                }
                continue;
            }
            if let Some((at, _, _)) = &self.retry {
                tokio::time::sleep_until(*at).await;
                if let Some((_, frame, pending)) = self.retry.take() {
                    return Ok(Some(self.issue(frame, pending)));
                }
                continue;
            }
            if let Some(job) = &mut self.job {
                let last = self.last.take();
                let next = job.next(&mut self.shared.lock(), last);
                match next {
                    Some((frame, pending)) => return Ok(Some(self.issue(frame, pending))),
                    None => self.job = None,
                }
                continue;
            }
            if self.quit || self.ended {
                return Ok(None);
            }
            let followup = self.shared.lock().followups.pop_front();
            if let Some(Followup::Watch { room, since }) = followup {
                self.job = Some(Job::new(JobKind::Watch { room, since }));
                continue;
            }
            tokio::select! {
                biased;
                () = self.shared.wake.notified() => {}
                item = self.lines.next() => match item {
                    None => {
                        self.ended = true;
                        self.job = Some(Job::barrier());
                    }
                    Some(Err(e)) => return Err(e),
                    Some(Ok(item)) => self.on_line(item),
                },
            }
        }
    }
}

/// The pump's writer for a signed-in line-mode connection: frames become text.
pub(crate) struct LineWriter<W> {
    out: BufWriter<W>,
    shared: Arc<Shared>,
    /// Reused for every frame's text.
    text: String,
    /// Outcomes rendered since the last flush; the reader learns them once they are flushed.
    answered: Vec<(RequestId, Outcome)>,
}

impl<W: AsyncWrite + Unpin + Send> LineWriter<W> {
    async fn write_frame(&mut self, frame: &Outgoing) -> Result<(), Error> {
        self.text.clear();
        let answer = {
            let mut st = self.shared.lock();
            let answer = render::render(&mut st, frame.response(), &mut self.text);
            if !st.followups.is_empty() {
                self.shared.wake.notify_one();
            }
            answer
        };
        self.answered.extend(answer);
        self.out.write_all(self.text.as_bytes()).await?;
        Ok(())
    }
}

impl<W: AsyncWrite + Unpin + Send> FrameWriter for LineWriter<W> {
    type Error = Error;

    async fn feed(&mut self, codec: Codec, bytes: Bytes) -> Result<(), Error> {
        // Only reached if a frame is handed over encoded; the pump uses `feed_frame`.
        match codec.decode_response(&bytes) {
            Ok(resp) => self.write_frame(&Outgoing::new(resp.id, resp.frame)).await,
            Err(e) => Err(Error::Io(std::io::Error::other(e))),
        }
    }

    async fn feed_frame(&mut self, _codec: Codec, frame: Arc<Outgoing>) -> Result<(), Error> {
        self.write_frame(&frame).await
    }

    async fn flush(&mut self) -> Result<(), Error> {
        self.out.flush().await?;
        if !self.answered.is_empty() {
            self.shared.lock().answered.extend(self.answered.drain(..));
            self.shared.wake.notify_one();
        }
        Ok(())
    }

    /// Line mode has no keepalive: a terminal cannot answer one. Idle connections are reaped
    /// by `line_idle_timeout`.
    async fn probe(&mut self) -> Result<(), Error> {
        Ok(())
    }
}

/// Writes `text` and flushes, within the write timeout.
async fn say<W: AsyncWrite + Unpin>(
    out: &mut BufWriter<W>,
    text: &str,
    timeout: Duration,
) -> Result<(), CloseCause> {
    let write = async {
        out.write_all(text.as_bytes()).await?;
        out.flush().await
    };
    match tokio::time::timeout(timeout, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(CloseCause::Io),
        Err(_) => Err(CloseCause::SlowConsumer),
    }
}

/// Runs a line-mode connection from `peer` from its first bytes to its close.
pub(crate) async fn run<R, W>(
    server: &Inner,
    read: R,
    write: W,
    accepted: Instant,
    peer: IpAddr,
) -> CloseCause
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let config = &server.config;
    let mut lines = FramedRead::with_capacity(
        read,
        LineCodec::new(config.max_line_bytes),
        config.read_buffer_bytes,
    );
    let mut out = BufWriter::new(write);
    let c = &server.counters;

    let cause = match sign_in(server, &mut lines, &mut out, accepted, peer).await {
        Ok((session, outbox)) => {
            Counters::bump(&c.line_sessions);
            c.open_line.fetch_add(1, Ordering::Relaxed);
            let session_id = session.id();
            let rate = server.engine.limits().requests_per_second;
            let retry_delay = if rate.is_finite() && rate > 0.0 {
                Duration::from_secs_f64((1.0 / rate).clamp(0.01, 5.0))
            } else {
                Duration::from_secs(1)
            };
            let shared = Arc::new(Shared {
                state: Mutex::new(State::default()),
                wake: Notify::new(),
            });
            let mut reader = LineReader {
                lines,
                shared: shared.clone(),
                max_line: config.max_line_bytes,
                guests: server.engine.limits().allow_guests,
                job: Some(Job::new(JobKind::SignedIn {
                    direct: VecDeque::new(),
                })),
                last: None,
                inflight: None,
                retry: None,
                retry_delay,
                next_id: 1,
                quit: false,
                ended: false,
            };
            let mut writer = LineWriter {
                out,
                shared,
                text: String::new(),
                answered: Vec::new(),
            };
            let end = pump(
                session,
                outbox,
                &mut reader,
                &mut writer,
                CodecChoice::Fixed(Codec::Postcard),
                &config.line_pump(),
                &server.shutdown,
            )
            .await;
            Counters::drop_one(&c.open_line);
            let cause = match end {
                PumpEnd::PeerClosed if reader.quit => CloseCause::Quit,
                ref end => CloseCause::of(end),
            };
            tracing::debug!(session = %session_id, cause = cause.as_str(), ?end, "line connection ended");
            lines = reader.lines;
            out = writer.out;
            cause
        }
        Err(cause) => cause,
    };
    server.count(cause);
    if let Some(line) = cause.line_farewell() {
        let text = format!("{line}\r\n");
        // Bounded by `close_timeout`: a slow consumer's socket is full, and its last line is a
        // courtesy, not worth holding the connection for.
        let _ = say(&mut out, &text, config.close_timeout).await;
    }
    if !matches!(cause, CloseCause::Io | CloseCause::PeerClosed) {
        let closed = tokio::time::timeout(config.close_timeout, out.shutdown()).await;
        if matches!(closed, Ok(Ok(()))) {
            linger(lines.get_mut(), config.close_timeout).await;
        }
    }
    cause
}

/// The sign-in loop: the banner at the first line, then `/login`, `/nick`, `/help`, `/quit`
/// until the user is signed in, within `line_auth_timeout` of connecting and
/// `line_max_login_attempts` attempts, each of which the
/// [`SignInGate`](crate::SignInGate), if there is one, must admit first.
async fn sign_in<R, W>(
    server: &Inner,
    lines: &mut FramedRead<R, LineCodec>,
    out: &mut BufWriter<W>,
    accepted: Instant,
    peer: IpAddr,
) -> Result<(Session, Outbox), CloseCause>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let config = &server.config;
    let c = &server.counters;
    let guests = server.engine.limits().allow_guests;
    let deadline = accepted + config.line_auth_timeout;
    let mut greeted = false;
    let mut failures = 0;
    loop {
        let next = tokio::select! {
            biased;
            () = server.shutdown.triggered() => return Err(CloseCause::Shutdown),
            next = tokio::time::timeout_at(deadline, lines.next()) => next,
        };
        let item = match next {
            Err(_elapsed) => {
                Counters::bump(&c.auth_timeout);
                let text = format!(
                    "! sign-in timed out: sign in within {} of connecting\r\n",
                    crate::close::human(config.line_auth_timeout)
                );
                let _ = say(out, &text, config.write_timeout).await;
                return Err(CloseCause::Unauthenticated);
            }
            Ok(None) => return Err(CloseCause::PeerClosed),
            Ok(Some(Err(_))) => return Err(CloseCause::Io),
            Ok(Some(Ok(item))) => item,
        };
        let mut text = String::new();
        if !greeted {
            // The banner comes with the first line: before it, the server cannot know the
            // peer is a person (a binary client's first byte is 0x00; see the crate docs).
            greeted = true;
            render::banner(&mut text, &config.banner, guests);
        }
        let auth = match item {
            LineItem::TooLong => {
                let msg = format!(
                    "that line is longer than {} bytes; it was discarded",
                    config.max_line_bytes
                );
                render::error(&mut text, &msg);
                None
            }
            LineItem::InvalidUtf8 => {
                render::error(&mut text, "that line is not valid UTF-8; it was discarded");
                None
            }
            LineItem::Line(line) => match Command::parse(&line) {
                Command::Empty => None,
                Command::Help => {
                    render::help(&mut text, guests);
                    None
                }
                Command::Quit => {
                    say(out, &text, config.write_timeout).await?;
                    return Err(CloseCause::Quit);
                }
                Command::Login { user, password } => Some(HelloAuth::Login {
                    username: user,
                    password: password.into_string(),
                }),
                Command::Nick(name) => Some(HelloAuth::Guest(name)),
                Command::Token(token) => Some(HelloAuth::Token(token.into_string())),
                Command::Usage(usage) => {
                    render::error(&mut text, usage);
                    None
                }
                _ => {
                    let how = if guests {
                        "sign in first: /login <user> <password> or /nick <name>"
                    } else {
                        "sign in first: /login <user> <password>"
                    };
                    render::error(&mut text, how);
                    None
                }
            },
        };
        if !text.is_empty() {
            say(out, &text, config.write_timeout).await?;
        }
        let Some(auth) = auth else { continue };
        // `/login` and `/nick` both carry credentials: each is an attempt against the
        // per-address budget, and a refused one is never tried.
        if !config.admit_sign_in(peer) {
            Counters::bump(&c.auth_gated);
            let mut text = String::new();
            render::error(&mut text, SIGN_IN_REFUSED);
            say(out, &text, config.write_timeout).await?;
            return Err(CloseCause::Unauthenticated);
        }
        let hello = Hello {
            version: PROTOCOL_VERSION,
            auth: Some(auth),
        };
        match server.engine.open_with_hello(&hello, None).await {
            Ok(opened) => return Ok(opened),
            Err(e) => {
                failures += 1;
                let mut text = String::new();
                render::error(&mut text, &sanitize(&e.public_message()));
                let out_of_attempts = failures >= config.line_max_login_attempts;
                if out_of_attempts {
                    Counters::bump(&c.auth_failed);
                    render::error(&mut text, "too many failed sign-in attempts");
                }
                say(out, &text, config.write_timeout).await?;
                if out_of_attempts {
                    return Err(CloseCause::Unauthenticated);
                }
            }
        }
    }
}
