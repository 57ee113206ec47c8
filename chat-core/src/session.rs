//! One client connection's logic, with no I/O.
//!
//! A transport turns bytes into [`Request`]s and calls [`Session::handle`] (or
//! [`Session::handle_bytes`]); everything the client should receive — replies, errors, room
//! messages, presence — comes out of the session's [`Outbox`], which the transport writes to
//! the socket. Tests drive a session exactly like that, with no socket at all.
//!
//! ```text
//!  socket ──bytes──▶ transport reader ──Request──▶ Session::handle ──▶ Engine / Hub
//!                                                                          │
//!  socket ◀──bytes── transport writer ◀──Arc<Outgoing>── Outbox ◀─────────┘ (bounded)
//! ```

use crate::auth::{Credentials, Identity};
use crate::engine::{Author, Engine};
use crate::error::{Error, Result};
use crate::hub::{CloseReason, FinishOutcome, Lagged, RoomRing, SessionShared};
use crate::ids::{RoomId, Seq, SessionId};
use crate::model::{Appended, HistoryQuery};
use crate::protocol::{
    ClientFrame, Codec, Entry, Hello, HelloAuth, Outgoing, PROTOCOL_VERSION, Request, RequestId,
    RoomInfo, Secret, SeqRange, ServerFrame, UserInfo, WireLimits,
};
use crate::queue::{Item, Pumped, Queue, SlotRef, Taken};
use crate::ratelimit::TokenBucket;
use crate::store::MAX_HISTORY_PAGE;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::task::{Context, Poll};
use std::time::Duration;

/// What a transport writes next.
#[derive(Debug)]
pub enum Outbound {
    /// A frame to send; call [`Outgoing::encoded`] with the connection's codec.
    Frame(Arc<Outgoing>),
    /// Close the connection for this reason. For [`CloseReason::Shutdown`], first drain what
    /// is still queued with [`Outbox::try_recv`].
    Close(CloseReason),
}

/// The outbound side of a session: its bounded queue (replies and events), the rooms it
/// reads from their rings, and the close signal.
///
/// Each round of the writer (when what it took last is written) snapshots the released seq
/// of every ring it reads, takes everything queued, then the rings' entries up to the
/// snapshot: so a frame queued before an entry was released — the `sent` acknowledgement of
/// your own message, a `subscribed` reply — always goes out before the entry. See the hub's
/// module docs.
pub struct Outbox {
    /// Held directly (not through `shared`): the writer's hot path touches only the queue.
    queue: Arc<Queue>,
    /// The queue's slot, checked before taking the queue's lock.
    slot: SlotRef,
    shared: Arc<SessionShared>,
    /// The rooms this writer reads.
    cursors: Cursors,
    /// Frames taken from the queue and the rings, in the order they go out. At most a round's
    /// worth: the queue's capacity plus a ring's capacity per room.
    staged: VecDeque<Arc<Outgoing>>,
    /// Reused buffer for the items taken from the queue, with their stamps.
    items: Vec<(Item, u64)>,
    /// The node's release epoch (see the hub's module docs).
    epoch: Arc<AtomicU64>,
}

/// The rooms a writer reads: the first inline (most sessions read one or a few rooms, and
/// the writer looks at its cursors on every round: one heap buffer fewer to miss), the rest
/// in a vector.
#[derive(Default)]
struct Cursors {
    first: Option<Cursor>,
    rest: Vec<Cursor>,
}

impl Cursors {
    fn iter(&self) -> impl Iterator<Item = &Cursor> {
        self.first.iter().chain(self.rest.iter())
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut Cursor> {
        self.first.iter_mut().chain(self.rest.iter_mut())
    }

    /// Adds a cursor, replacing the room's current one (a re-subscribe restarts it).
    fn insert(&mut self, cursor: Cursor) {
        if let Some(c) = self.iter_mut().find(|c| c.room == cursor.room) {
            *c = cursor;
        } else if self.first.is_none() {
            self.first = Some(cursor);
        } else {
            self.rest.push(cursor);
        }
    }

    fn remove(&mut self, room: RoomId) -> Option<Cursor> {
        if self.first.as_ref().is_some_and(|c| c.room == room) {
            let c = self.first.take();
            if !self.rest.is_empty() {
                self.first = Some(self.rest.swap_remove(0));
            }
            return c;
        }
        let i = self.rest.iter().position(|c| c.room == room)?;
        Some(self.rest.swap_remove(i))
    }
}

/// One room read from its ring.
struct Cursor {
    room: RoomId,
    ring: Arc<RoomRing>,
    /// The next seq to take.
    next: Seq,
    /// Where the hub reads how far this writer has read; `reported` is what was last stored.
    cell: Arc<AtomicU64>,
    reported: u64,
    /// Report at least every this many entries: the hub's slow-consumer check allows a
    /// report to be up to one eviction batch behind ([`OpenCursor::report_every`]).
    report_every: u64,
}

impl Cursor {
    /// Takes the ring's entries up to `to`; `Err` if the writer fell behind the ring.
    fn read(&mut self, upto: u64, out: &mut VecDeque<Arc<Outgoing>>) -> Result<(), Lagged> {
        self.next = self.ring.read(self.next, upto, out)?;
        self.note_read();
        Ok(())
    }

    /// Reports the position every eviction batch at least (the hub allows for that much
    /// staleness); exactly when parking ([`Cursor::report`]).
    fn note_read(&mut self) {
        let at = self.next.0.saturating_sub(1);
        if at >= self.reported + self.report_every {
            self.report();
        }
    }

    fn report(&mut self) {
        let at = self.next.0.saturating_sub(1);
        if at != self.reported {
            self.reported = at;
            self.cell.store(at, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        // Nobody will write these frames: refuse new ones so the hub drops the subscriber.
        self.queue.close();
    }
}

impl Outbox {
    fn new(queue: Arc<Queue>, shared: Arc<SessionShared>) -> Outbox {
        Outbox {
            slot: queue.slot(),
            epoch: queue.epoch(),
            queue,
            shared,
            cursors: Cursors::default(),
            staged: VecDeque::new(),
            items: Vec::new(),
        }
    }

    /// The next frame to write, or the order to close. Close takes priority: a slow consumer
    /// is cut off without first writing its backlog.
    pub async fn recv(&mut self) -> Outbound {
        loop {
            if let Pumped::Out(out) = std::future::poll_fn(|cx| self.poll_next(cx, false)).await {
                return out;
            }
        }
    }

    /// [`Outbox::recv`], or a keepalive probe the pump's reader asked for
    /// ([`Session::request_probe`]).
    pub(crate) async fn recv_or_probe(&mut self) -> Pumped {
        std::future::poll_fn(|cx| self.poll_next(cx, true)).await
    }

    fn poll_next(&mut self, cx: &mut Context<'_>, probes: bool) -> Poll<Pumped> {
        loop {
            if !self.queue.is_closing() {
                if let Some(f) = self.staged.pop_front() {
                    return Poll::Ready(Pumped::Out(Outbound::Frame(f)));
                }
            }
            let mut items = std::mem::take(&mut self.items);
            let taken = self.queue.poll_take(cx, probes, &mut items);
            match taken {
                Taken::Close(reason) => {
                    self.items = items;
                    return Poll::Ready(Pumped::Out(Outbound::Close(reason)));
                }
                Taken::Probe => {
                    self.items = items;
                    return Poll::Ready(Pumped::Probe);
                }
                Taken::Items(epoch) => {
                    self.apply(&mut items);
                    self.items = items;
                    self.send_rings(epoch);
                }
                Taken::Parked => {
                    self.items = items;
                    // Parked first, then a last look at the rings: a publisher releasing an
                    // entry after this look sees the writer parked and wakes it.
                    let epoch = self.epoch.load(std::sync::atomic::Ordering::SeqCst);
                    self.send_rings(epoch);
                    if !self.staged.is_empty() || self.queue.is_closing() {
                        self.queue.unpark();
                        continue;
                    }
                    for c in self.cursors.iter_mut() {
                        c.report();
                    }
                    if !self.queue.settle() {
                        // Woken during the look: look again.
                        continue;
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Applies what was taken from the queue, in order. Before each item, the rings' entries
    /// released before it was queued (epoch at most its stamp) go out; then frames are staged,
    /// cursors opened, and an ended cursor's last owed entries staged.
    fn apply(&mut self, items: &mut Vec<(Item, u64)>) {
        // Rooms ending in this batch: their ring may already have dropped what they are owed
        // (the marker carries it), so a read that finds it gone is not a lag for them.
        let ending: Vec<RoomId> = items
            .iter()
            .filter_map(|(i, _)| match i {
                Item::End(end) => Some(end.room),
                _ => None,
            })
            .collect();
        for (item, stamp) in items.drain(..) {
            self.send_merged(stamp, &ending);
            match item {
                Item::Frame(f) => self.staged.push_back(f),
                Item::Open(open) => {
                    let cursor = Cursor {
                        room: open.room,
                        ring: open.ring.clone(),
                        next: open.after.next(),
                        reported: open.after.0,
                        cell: open.cell.clone(),
                        report_every: open.report_every,
                    };
                    // A re-subscribe restarts the room after its new replay.
                    self.cursors.insert(cursor);
                }
                Item::End(end) => {
                    if let Some(c) = self.cursors.remove(end.room) {
                        if c.next <= end.last {
                            if c.next <= end.evicted {
                                self.lagged();
                            } else {
                                let owed = end.owed.iter().filter(|(s, _)| *s >= c.next);
                                for (_, f) in owed.take_while(|(s, _)| *s <= end.last) {
                                    self.staged.push_back(f.clone());
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Stages every ring's entries released up to `epoch`, merged across rooms in release
    /// order (one room, the common case: in one read).
    fn send_rings(&mut self, epoch: u64) {
        if self.cursors.rest.is_empty() {
            if let Some(c) = &mut self.cursors.first {
                if c.read(epoch, &mut self.staged).is_err() {
                    self.lagged();
                }
            }
            return;
        }
        self.send_merged(epoch, &[]);
    }

    /// Stages the entries released up to `epoch` from every ring, oldest release first. A
    /// room in `ending` whose entries are gone is skipped (its end marker carries them).
    fn send_merged(&mut self, epoch: u64, ending: &[RoomId]) {
        loop {
            let mut best: Option<(usize, Seq, u64, Arc<Outgoing>)> = None;
            let mut lagged = false;
            for (i, c) in self.cursors.iter().enumerate() {
                match c.ring.first(c.next) {
                    Ok(Some((seq, e, f))) if e <= epoch => {
                        if best.as_ref().is_none_or(|b| e < b.2) {
                            best = Some((i, seq, e, f));
                        }
                    }
                    Ok(_) => {}
                    Err(Lagged) if ending.contains(&c.room) => {}
                    Err(Lagged) => lagged = true,
                }
            }
            if lagged {
                self.lagged();
                return;
            }
            let Some((i, seq, _, f)) = best else { return };
            if let Some(c) = self.cursors.iter_mut().nth(i) {
                c.next = seq.next();
                c.note_read();
            }
            self.staged.push_back(f);
        }
    }

    fn lagged(&mut self) {
        self.shared.close.close(CloseReason::SlowConsumer);
    }

    /// One round without waiting (see the type's docs).
    fn round(&mut self) {
        // The epoch before the pending bit: a frame missed here is stamped later than every
        // entry sent up to it.
        let mut epoch = self.epoch.load(std::sync::atomic::Ordering::SeqCst);
        if self.slot.pending() {
            let mut items = std::mem::take(&mut self.items);
            epoch = self.queue.take_all(&mut items);
            self.apply(&mut items);
            self.items = items;
        }
        self.send_rings(epoch);
    }

    /// A frame, if any, without waiting. Transports use it to batch several frames into one
    /// write and one flush.
    pub fn try_recv(&mut self) -> Option<Arc<Outgoing>> {
        if let Some(f) = self.staged.pop_front() {
            return Some(f);
        }
        let epoch = self.epoch.load(std::sync::atomic::Ordering::SeqCst);
        if !self.slot.pending() && self.cursors.rest.is_empty() {
            // The common case, one room and nothing queued: its next entry straight back,
            // without going through `staged` (a buffer of its own, one more cache miss).
            if let Some(c) = &mut self.cursors.first {
                return match c.ring.first(c.next) {
                    Ok(Some((seq, e, f))) if e <= epoch => {
                        c.next = seq.next();
                        c.note_read();
                        Some(f)
                    }
                    Ok(_) => None,
                    Err(Lagged) => {
                        self.lagged();
                        None
                    }
                };
            }
        }
        self.round();
        self.staged.pop_front()
    }

    /// Moves up to `max` frames into `out`; returns how many. The cheap way for a writer to
    /// build a batch.
    pub fn drain_into(&mut self, out: &mut Vec<Arc<Outgoing>>, max: usize) -> usize {
        let before = out.len();
        while out.len() - before < max {
            if self.staged.is_empty() {
                self.round();
                if self.staged.is_empty() {
                    break;
                }
            }
            let n = (max - (out.len() - before)).min(self.staged.len());
            out.extend(self.staged.drain(..n));
        }
        out.len() - before
    }

    /// Frames waiting: in the queue, taken from it, and released in the rooms read but not
    /// yet taken.
    pub fn len(&self) -> usize {
        let unread: u64 = self
            .cursors
            .iter()
            .map(|c| {
                c.ring
                    .released()
                    .0
                    .saturating_sub(c.next.0.saturating_sub(1))
            })
            .sum();
        self.queue.len() + self.staged.len() + usize::try_from(unread).unwrap_or(usize::MAX)
    }

    /// Whether no frame is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// This session's id.
    pub fn session_id(&self) -> SessionId {
        self.shared.id
    }
}

/// One client connection's state and logic.
///
/// Dropping the session unregisters it from the hub: its subscriptions end and presence is
/// updated.
pub struct Session {
    engine: Engine,
    shared: Arc<SessionShared>,
    identity: Identity,
    requests: TokenBucket,
    typing: TokenBucket,
    violations: u32,
}

impl Engine {
    /// Opens a session for an identity the transport has already authenticated (e.g. during
    /// the WebSocket handshake). The client may still send `hello` to check the version.
    pub fn open_session(&self, identity: Identity) -> (Session, Outbox) {
        let shared = self.inner.hub.register_session(
            identity.user,
            identity.username.clone(),
            identity.token_hash,
        );
        let limits = &self.inner.limits;
        let session = Session {
            engine: self.clone(),
            shared: shared.clone(),
            identity,
            requests: TokenBucket::new(limits.requests_per_second, limits.request_burst),
            typing: TokenBucket::new(limits.typing_per_second, limits.typing_burst),
            violations: 0,
        };
        let queue = shared.queue.clone();
        (session, Outbox::new(queue, shared))
    }

    /// Opens a session whose first exchange is a `hello` carrying credentials (TCP binary
    /// mode). On success the `welcome` is already queued in the outbox; on failure the error
    /// should be sent to the client and the connection closed.
    pub async fn open_with_hello(
        &self,
        hello: &Hello,
        id: Option<RequestId>,
    ) -> Result<(Session, Outbox)> {
        check_version(hello.version)?;
        let creds = match &hello.auth {
            Some(HelloAuth::Token(t)) => Credentials::Token(t.clone()),
            Some(HelloAuth::Login { username, password }) => Credentials::Password {
                username: username.clone(),
                password: password.clone(),
            },
            Some(HelloAuth::Guest(name)) => Credentials::Guest(name.clone()),
            None => return Err(Error::Unauthenticated),
        };
        let mut identity = self.inner.authenticator.authenticate(&creds).await?;
        // A new guest comes back with a token, not its name (see `Accounts::guest`). The
        // session counts as opened with that token, so revoking it closes the session too.
        let token = match creds {
            Credentials::Guest(_) => self.inner.authenticator.guest_token(&identity).await?,
            _ => None,
        };
        if let Some(t) = &token {
            identity.token_hash = Some(t.hash());
        }
        let (session, outbox) = self.open_session(identity);
        session.push(id, session.welcome(token.map(|t| t.as_str().to_string())));
        Ok((session, outbox))
    }
}

fn check_version(version: u32) -> Result<()> {
    if version == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(Error::UnsupportedVersion {
            requested: version,
            supported: PROTOCOL_VERSION,
        })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.engine.inner.hub.unregister_session(&self.shared);
    }
}

impl Session {
    /// Who this session is.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// This session's id.
    pub fn id(&self) -> SessionId {
        self.shared.id
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Resolves when the engine wants this session closed (the reader loop should stop).
    pub async fn closed(&self) -> CloseReason {
        self.shared.close.closed().await
    }

    /// Whether the engine has asked this session to close.
    pub fn is_closed(&self) -> bool {
        self.shared.close.is_closed()
    }

    /// Closes the session from the transport's side (e.g. to enforce a transport rule).
    pub fn close(&self, reason: CloseReason) {
        self.shared.close.close(reason);
    }

    /// Asks this session's writer for a keepalive probe ([`crate::conn::pump`]'s reader does,
    /// when the peer has been quiet for a probe interval).
    pub(crate) fn request_probe(&self) {
        self.shared.queue.request_probe();
    }

    /// Queues a frame for this session only. Returns `false` if the queue was full (the
    /// session is then closed as a slow consumer).
    pub fn push(&self, id: Option<RequestId>, frame: ServerFrame) -> bool {
        self.shared.push(Outgoing::new(id, frame))
    }

    fn push_error(&self, id: Option<RequestId>, err: &Error) {
        if matches!(err, Error::Storage { .. } | Error::Internal(_)) {
            tracing::error!(session = %self.shared.id, error = %err, "request failed");
        }
        self.push(
            id,
            ServerFrame::Error {
                code: err.code(),
                message: err.public_message(),
            },
        );
    }

    fn welcome(&self, token: Option<String>) -> ServerFrame {
        let l = self.engine.limits();
        ServerFrame::Welcome {
            token: token.map(Secret::from),
            version: PROTOCOL_VERSION,
            session: self.shared.id,
            user: UserInfo {
                id: self.identity.user,
                username: self.identity.username.clone(),
            },
            limits: WireLimits {
                max_body_bytes: l.max_body_bytes as u32,
                max_replay: l.max_replay as u32,
                max_history_page: MAX_HISTORY_PAGE as u32,
            },
        }
    }

    /// Decodes and handles one frame. Undecodable input gets a `bad_frame` error and the
    /// session stays usable.
    pub async fn handle_bytes(&mut self, codec: Codec, bytes: &[u8]) {
        match codec.decode_request(bytes) {
            Ok(req) => self.handle(req).await,
            Err(e) => {
                let id = codec.request_id_hint(bytes);
                if self.admit(id) {
                    self.push_error(id, &e);
                }
            }
        }
    }

    /// Applies the request rate limit. Over it, the client gets `rate_limited`; a client that
    /// keeps going is closed as a policy violation.
    ///
    /// A refused request that carries an id is always answered (its sender is waiting for that
    /// id); refused fire-and-forget frames are answered on the first refusal and every tenth,
    /// so a flood does not fill the flooder's own queue with errors.
    fn admit(&mut self, id: Option<RequestId>) -> bool {
        if self.requests.try_take() {
            self.violations = 0;
            return true;
        }
        self.violations += 1;
        if self.violations >= self.engine.limits().max_rate_violations {
            self.shared.close.close(CloseReason::PolicyViolation);
        } else if id.is_some() || self.violations == 1 || self.violations % 10 == 0 {
            self.push_error(id, &Error::RateLimited);
        }
        false
    }

    /// Handles one request, queueing its reply (or error) and any resulting events.
    pub async fn handle(&mut self, req: Request) {
        if self.is_closed() {
            return;
        }
        // Typing has its own, stricter budget and is dropped silently when over it.
        if let ClientFrame::Typing { room } = req.frame {
            self.typing(room).await;
            return;
        }
        if !self.admit(req.id) {
            return;
        }
        let id = req.id;
        if let Err(e) = self.dispatch(id, req.frame).await {
            self.push_error(id, &e);
        }
    }

    async fn dispatch(&mut self, id: Option<RequestId>, frame: ClientFrame) -> Result<()> {
        let engine = self.engine.clone();
        let me = self.identity.clone();
        let reply = |frame: ServerFrame| {
            self.shared.push(Outgoing::new(id, frame));
        };
        match frame {
            ClientFrame::Hello(hello) => {
                check_version(hello.version)?;
                reply(self.welcome(None));
            }
            ClientFrame::Ping => reply(ServerFrame::Pong),
            ClientFrame::Subscribe { room, since_seq } => {
                self.subscribe(id, room, since_seq).await?
            }
            ClientFrame::Unsubscribe { room } => {
                self.engine.inner.hub.unsubscribe(&self.shared, room);
                reply(ServerFrame::Ok);
            }
            ClientFrame::Send {
                room,
                body,
                client_msg_id,
            } => {
                let ack = self.ack(id);
                engine
                    .publish_with(Author::User(me), room, body, client_msg_id, ack)
                    .await?;
            }
            ClientFrame::SendDirect {
                to,
                body,
                client_msg_id,
            } => {
                let ack = self.ack(id);
                engine
                    .send_direct_with(&me, &to, body, client_msg_id, ack)
                    .await?;
            }
            ClientFrame::History {
                room,
                before,
                after,
                limit,
            } => {
                let query = match (before, after) {
                    (Some(_), Some(_)) => {
                        return Err(Error::invalid(
                            "before",
                            "give `before` or `after`, not both",
                        ));
                    }
                    (Some(b), None) => HistoryQuery::Before(b),
                    (None, Some(a)) => HistoryQuery::After(a),
                    (None, None) => HistoryQuery::Before(Seq(u64::MAX)),
                };
                let limit = limit
                    .map(|l| l as usize)
                    .unwrap_or(engine.limits().default_history_page);
                let page = engine.history(&me, room, query, limit).await?;
                reply(ServerFrame::History {
                    room,
                    entries: page.entries.iter().map(Entry::from).collect(),
                    has_more: page.has_more,
                });
            }
            ClientFrame::CreateRoom { name, kind } => {
                let room = engine.create_room(&me, &name, kind).await?;
                reply(ServerFrame::Room {
                    room: RoomInfo::from(&room),
                });
            }
            ClientFrame::Join { room, name } => {
                let room = match (room, name) {
                    (Some(r), _) => r,
                    (None, Some(n)) => engine.public_room_by_name(&n).await?.id,
                    (None, None) => return Err(Error::invalid("room", "give `room` or `name`")),
                };
                let room = engine.join(&me, room).await?;
                reply(ServerFrame::Room {
                    room: RoomInfo::from(&room),
                });
            }
            ClientFrame::Leave { room } => {
                engine.leave(&me, room).await?;
                reply(ServerFrame::Ok);
            }
            ClientFrame::AddMember { room, username } => {
                engine.add_member(&me, room, &username).await?;
                reply(ServerFrame::Ok);
            }
            ClientFrame::Kick { room, username } => {
                engine.kick(&me, room, &username).await?;
                reply(ServerFrame::Ok);
            }
            ClientFrame::SetRole {
                room,
                username,
                role,
            } => {
                engine.set_role(&me, room, &username, role).await?;
                reply(ServerFrame::Ok);
            }
            ClientFrame::CreateInvite {
                room,
                ttl_secs,
                max_uses,
            } => {
                let inv = engine
                    .create_invite(&me, room, ttl_secs.map(Duration::from_secs), max_uses)
                    .await?;
                reply(ServerFrame::Invite {
                    code: inv.code,
                    room: inv.room,
                    expires_at: inv.expires_at,
                    max_uses: inv.max_uses,
                });
            }
            ClientFrame::RedeemInvite { code } => {
                let room = engine.redeem_invite(&me, &code).await?;
                reply(ServerFrame::Room {
                    room: RoomInfo::from(&room),
                });
            }
            ClientFrame::MarkRead { room, seq } => {
                let info = engine.mark_read(&me, room, seq).await?;
                reply(ServerFrame::Unread(info));
            }
            ClientFrame::Rooms => {
                let rooms = engine.rooms(&me).await?;
                reply(ServerFrame::Rooms { rooms });
            }
            ClientFrame::PublicRooms => {
                let rooms = engine.public_rooms().await?;
                reply(ServerFrame::Rooms { rooms });
            }
            ClientFrame::Members { room } => {
                let members = engine.members(&me, room).await?;
                reply(ServerFrame::Members { room, members });
            }
            ClientFrame::Typing { .. } => {}
        }
        Ok(())
    }

    /// The sender's ack, queued after the append and before the message fans out.
    fn ack(&self, id: Option<RequestId>) -> impl FnOnce(&Appended) + Send + 'static {
        let shared = self.shared.clone();
        move |a: &Appended| {
            shared.push(Outgoing::new(
                id,
                ServerFrame::Sent {
                    room: a.entry.room,
                    seq: a.entry.seq,
                    duplicate: a.duplicate,
                },
            ));
        }
    }

    /// Subscribes with gapless replay. See `hub.rs` for why registration comes before the
    /// access check and the store read.
    async fn subscribe(
        &mut self,
        id: Option<RequestId>,
        room: RoomId,
        since: Option<Seq>,
    ) -> Result<()> {
        let hub = &self.engine.inner.hub;
        let store = self.engine.store().clone();
        // Checks that can fail on the client's input come first, before registration, so
        // that a bad re-subscribe leaves an existing subscription alone. (A seq that is not
        // ahead now never becomes ahead: latest only grows.)
        self.engine.check_read(room, self.identity.user).await?;
        if let Some(s) = since {
            let latest = store.latest_seq(room).await?;
            if s > latest {
                return Err(Error::SeqAhead {
                    room,
                    requested: s,
                    latest,
                });
            }
        }
        if !hub.begin_subscribe(&self.shared, room) {
            return Err(Error::LimitReached("subscriptions per session"));
        }
        let result = async {
            // Again after registration: a kick that raced with us either happened before this
            // check (we fail) or after the registration (it removed us; see hub.rs).
            self.engine.check_read(room, self.identity.user).await?;
            let latest = store.latest_seq(room).await?;
            let max_replay = self.engine.limits().max_replay as u64;
            let (entries, gap) = match since {
                None => (Vec::new(), None),
                Some(s) if s > latest => {
                    return Err(Error::SeqAhead {
                        room,
                        requested: s,
                        latest,
                    });
                }
                Some(s) if latest.0 - s.0 > max_replay => {
                    let entries = store
                        .history(
                            room,
                            HistoryQuery::Before(latest.next()),
                            max_replay as usize,
                        )
                        .await?;
                    let gap = SeqRange {
                        from: s.next(),
                        to: Seq(latest.0 - max_replay),
                    };
                    (entries, Some(gap))
                }
                Some(s) => {
                    let n = (latest.0 - s.0) as usize;
                    let entries = if n == 0 {
                        Vec::new()
                    } else {
                        store.history(room, HistoryQuery::After(s), n).await?
                    };
                    (entries, None)
                }
            };
            Ok((latest, entries, gap))
        }
        .await;
        let (latest, mut entries, mut gap) = match result {
            Ok(v) => v,
            Err(e) => {
                hub.abort_subscribe(&self.shared, room);
                return Err(e);
            }
        };
        let mut history_last = latest;
        loop {
            let reply = || {
                Outgoing::new(
                    id,
                    ServerFrame::Subscribed {
                        room,
                        entries: entries.iter().map(Entry::from).collect(),
                        latest_seq: history_last,
                        gap,
                    },
                )
            };
            match hub.finish_subscribe(&self.shared, room, history_last, reply) {
                FinishOutcome::Live { fill } => {
                    if fill {
                        self.engine.spawn_gap_fill(room);
                    }
                    return Ok(());
                }
                // Removed while we read (kicked, left, the room deleted, or the session
                // closed); the `unsubscribed` frame says which. The error says it too: a
                // deleted room is `room_not_found`, as it would be for the next subscribe.
                FinishOutcome::Removed => {
                    return Err(match store.room(room).await {
                        Ok(None) => Error::RoomNotFound(room),
                        _ => Error::NotMember(room),
                    });
                }
                // Without `since_seq` the client wants only what comes next: start there.
                FinishOutcome::Behind(last) if since.is_none() => history_last = last,
                // The room moved on while we read; the rest is committed, so read it too —
                // at most the newest `max_replay`, like the first read.
                FinishOutcome::Behind(last) => {
                    let max_replay = self.engine.limits().max_replay;
                    let want = last.0 - history_last.0;
                    let query = if want > max_replay as u64 {
                        entries.clear();
                        HistoryQuery::Before(last.next())
                    } else {
                        HistoryQuery::After(history_last)
                    };
                    let want = want.min(max_replay as u64) as usize;
                    let more = match store.history(room, query, want).await {
                        Ok(more) if !more.is_empty() => more,
                        Ok(_) => {
                            hub.abort_subscribe(&self.shared, room);
                            return Err(Error::Internal(format!(
                                "room {room}: seqs up to {last} were released but are not in the store"
                            )));
                        }
                        Err(e) => {
                            hub.abort_subscribe(&self.shared, room);
                            return Err(e);
                        }
                    };
                    history_last = more.last().map(|e| e.seq).unwrap_or(history_last);
                    entries.extend(more);
                    if entries.len() > max_replay {
                        entries.drain(..entries.len() - max_replay);
                    }
                    // What the replay no longer starts at is named, as on the first read.
                    if let (Some(s), Some(first)) = (since, entries.first()) {
                        if first.seq > s.next() {
                            gap = Some(SeqRange {
                                from: s.next(),
                                to: Seq(first.seq.0 - 1),
                            });
                        }
                    }
                }
            }
        }
    }

    async fn typing(&mut self, room: RoomId) {
        if !self.typing.try_take() {
            return;
        }
        let subscribed = crate::hub::lock(&self.shared.rooms).contains(&room);
        // Watchers of a public room are subscribed without being members; only members type.
        // The store read is bounded by the typing rate limit above.
        if !subscribed
            || !matches!(
                self.engine.is_member(room, self.identity.user).await,
                Ok(true)
            )
        {
            return;
        }
        let frame = ServerFrame::Typing {
            room,
            user: self.shared.info(),
        };
        self.engine
            .room_event(room, frame, Some(self.identity.user))
            .await;
    }
}
