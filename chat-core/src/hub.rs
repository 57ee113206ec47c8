//! The fan-out hub: live sessions, room channels, ordered delivery.
//!
//! # Shape
//! - `sessions` / `users`: every live session, and the sessions of each user (for per-user
//!   delivery and for closing a user's sockets on logout).
//! - `rooms`: one [`RoomChannel`] per room that has at least one subscribed session on this
//!   node. The channel's mutex is the only lock taken to deliver into a room, so rooms never
//!   contend with each other and the publish path takes no global lock (the `DashMap` look-up
//!   takes one shard's read lock for a pointer clone, not for the delivery).
//!
//! # Ordering: the sequencer
//! Appends to one room can complete out of seq order (two publishers race; another node's
//! entry arrives over the backplane). Each channel therefore releases entries strictly in seq
//! order: `last` is the highest seq delivered, early arrivals wait in `pending`, and a gap that
//! persists for [`Limits::gap_fill_after`] is read back from the store (see
//! [`crate::Engine`]). Live subscribers thus see `last + 1, last + 2, …` with no gap and no
//! duplicate.
//!
//! # Gapless subscribe
//! A subscribing session is first registered in the `Syncing` state, which the sequencer
//! skips but a removal of the user finds; only then does the engine check access and read the
//! store up to some `latest`. `finish_subscribe` then, under the channel lock, either answers
//! `Behind` (the room already released entries past that read: they are committed, so the
//! engine reads them too and comes back) or queues the replay and an [`OpenCursor`] after
//! `latest` and flips the session to `Live`: from there its writer reads the room's ring. A re-subscribe keeps
//! the existing registration, live or not, until that flip. See ARCHITECTURE.md for the
//! argument in full.
//!
//! # Delivery: one ring per room, one cursor per session
//! A released entry is appended once to the room's [`RoomRing`]; every subscribed session's
//! writer reads it from there with a cursor of its own (in its [`crate::Outbox`]), so a
//! publish touches no session except to wake a parked writer. The session's own queue (bounded)
//! carries everything else — replies, presence, typing — and the markers that order the two:
//! an [`OpenCursor`] queued right after a `subscribed` reply, an [`EndCursor`] with every
//! removal (before its `unsubscribed`, before an `unsubscribe`'s `ok`), naming the last entry
//! still owed. A node-wide release epoch numbers the entries and stamps the queued frames, so
//! the writer sends both in the order they happened (see [`crate::Outbox`], and
//! "Delivery" in ARCHITECTURE.md).
//!
//! # Bounded everything
//! A ring holds at most [`Limits::session_queue`] entries and a quarter; a cursor that falls
//! behind its oldest entry has lagged, and its session is closed as [`CloseReason::SlowConsumer`] — by the
//! writer when it notices, or by the publisher when it evicts (from the position each writer
//! reports in its cursor's cell, stored when it parks and every quarter ring, so a stalled
//! writer is cut off too). A full session queue closes the session the same way. The
//! publisher never waits. When every subscriber's writer is parked (has read everything) at a
//! publish, the next append drops the entries before it, so a quiet room holds its last
//! entry or two.

use crate::config::Limits;
use crate::ids::{RoomId, Seq, SessionId, UserId};
use crate::protocol::{Entry, Outgoing, ServerFrame, UnsubscribeReason, UserInfo};
use crate::queue::{Item, PushError, Queue, SlotRef, Slots};
use dashmap::DashMap;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use tokio::sync::Notify;

/// Why the engine closed a session. Transports map these to close codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// The client reads too slowly: it fell more than [`Limits::session_queue`] entries
    /// behind a room it reads, or its queue of replies and events overflowed. It may
    /// reconnect and resume.
    SlowConsumer,
    /// The client kept sending after being rate limited, or otherwise broke the rules.
    PolicyViolation,
    /// The user logged out or their token was revoked.
    Revoked,
    /// The server is shutting down.
    Shutdown,
}

impl CloseReason {
    /// A stable string for logs and close frames.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::PolicyViolation => "policy_violation",
            CloseReason::Revoked => "revoked",
            CloseReason::Shutdown => "shutdown",
        }
    }
}

/// Tells a session's transport to close, and why.
///
/// Not a `CancellationToken`: the writer half of every connection checks this on every
/// wake-up, and a token's check takes a mutex. Here the check is one atomic load (the
/// `OnceLock`), and closing also wakes the session's queue, so a writer parked on its queue
/// needs no second future to learn of the close (see [`crate::Outbox::recv`]).
#[derive(Debug)]
pub(crate) struct CloseSignal {
    reason: OnceLock<CloseReason>,
    /// Wakes [`CloseSignal::closed`] waiters (the reader half of a connection).
    notify: Notify,
    /// The session's queue, whose writer is woken on close.
    queue: Arc<Queue>,
}

impl CloseSignal {
    pub(crate) fn new(queue: Arc<Queue>) -> CloseSignal {
        CloseSignal {
            reason: OnceLock::new(),
            notify: Notify::new(),
            queue,
        }
    }

    /// Requests the close; the first reason wins.
    pub(crate) fn close(&self, reason: CloseReason) {
        if self.reason.set(reason).is_ok() {
            self.notify.notify_waiters();
            self.queue.closing(reason);
        }
    }

    pub(crate) fn reason(&self) -> Option<CloseReason> {
        self.reason.get().copied()
    }

    /// Tests: the first half of [`CloseSignal::close`] only, as seen by other threads
    /// while the closing thread is preempted between the two.
    #[cfg(test)]
    pub(crate) fn set_reason_only(&self, reason: CloseReason) {
        let _ = self.reason.set(reason);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.reason.get().is_some()
    }

    pub(crate) async fn closed(&self) -> CloseReason {
        loop {
            // Created before the check: `notify_waiters` reaches a `Notified` from its
            // creation on, so a close between the check and the wait is not missed.
            let notified = self.notify.notified();
            if let Some(reason) = self.reason() {
                return reason;
            }
            notified.await;
        }
    }
}

/// What the hub knows of one live session.
#[derive(Debug)]
pub(crate) struct SessionShared {
    pub(crate) id: SessionId,
    pub(crate) user: UserId,
    pub(crate) username: String,
    /// The login token this session authenticated with, so revoking it closes the session.
    pub(crate) token_hash: Option<[u8; 32]>,
    pub(crate) queue: Arc<Queue>,
    pub(crate) close: CloseSignal,
    /// Rooms this session is subscribed to (for clean-up). Locked briefly, never across await.
    pub(crate) rooms: Mutex<HashSet<RoomId>>,
}

impl SessionShared {
    /// Queues a frame without waiting. On a full queue the session is closed as a slow
    /// consumer; returns whether the frame was queued.
    pub(crate) fn push(&self, frame: Arc<Outgoing>) -> bool {
        self.push_item(Item::Frame(frame))
    }

    /// [`SessionShared::push`] for a queue item (a cursor marker).
    pub(crate) fn push_item(&self, item: Item) -> bool {
        match self.queue.push_item(item) {
            Ok(()) => true,
            Err(PushError::Full) => {
                self.close.close(CloseReason::SlowConsumer);
                false
            }
            Err(PushError::Closed) => false,
        }
    }

    pub(crate) fn info(&self) -> UserInfo {
        UserInfo {
            id: self.user,
            username: self.username.clone(),
        }
    }
}

/// Server-wide counters for status pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct HubStats {
    /// Live sessions on this node.
    pub sessions: usize,
    /// Distinct users with at least one live session on this node.
    pub users: usize,
    /// Rooms with at least one subscribed session on this node.
    pub rooms: usize,
}

pub(crate) struct Hub {
    sessions: DashMap<SessionId, Arc<SessionShared>>,
    users: DashMap<UserId, Vec<Arc<SessionShared>>>,
    rooms: DashMap<RoomId, Arc<RoomChannel>>,
    next_session: AtomicU64,
    limits: Arc<Limits>,
    /// Every session queue's slot in the dense arrays (see [`Slots`]).
    slots: Slots,
    /// The node's release epoch: +1 per entry appended to any ring, read to stamp every
    /// frame queued for a session, so that each writer sends both in the order they
    /// happened. One atomic add per published entry, not per delivery.
    epoch: Arc<AtomicU64>,
}

/// A request, from the sequencer to the engine, to read a room's missing seqs from the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FillRequest {
    pub(crate) room: RoomId,
}

/// Outcome of `finish_subscribe`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FinishOutcome {
    /// Live. With `fill`, a gap is open above the replay: the engine should schedule a fill.
    Live {
        /// Whether to schedule a gap fill.
        fill: bool,
    },
    /// The session was removed while syncing (kicked, closed, queue overflow).
    Removed,
    /// The room has released entries up to this seq, past the caller's read: read the rest
    /// from the store and call again.
    Behind(Seq),
}

impl Hub {
    pub(crate) fn new(limits: Arc<Limits>) -> Hub {
        Hub {
            sessions: DashMap::new(),
            users: DashMap::new(),
            rooms: DashMap::new(),
            next_session: AtomicU64::new(1),
            limits,
            slots: Slots::default(),
            epoch: Arc::default(),
        }
    }

    pub(crate) fn stats(&self) -> HubStats {
        HubStats {
            sessions: self.sessions.len(),
            users: self.users.len(),
            rooms: self.rooms.len(),
        }
    }

    // ----- sessions -----

    pub(crate) fn register_session(
        &self,
        user: UserId,
        username: String,
        token_hash: Option<[u8; 32]>,
    ) -> Arc<SessionShared> {
        let queue = Queue::with_slot(
            self.limits.session_queue,
            self.slots.take(),
            self.epoch.clone(),
        );
        let id = SessionId(self.next_session.fetch_add(1, Ordering::Relaxed));
        let shared = Arc::new(SessionShared {
            id,
            user,
            username,
            token_hash,
            close: CloseSignal::new(queue.clone()),
            queue,
            rooms: Mutex::new(HashSet::new()),
        });
        self.sessions.insert(id, shared.clone());
        self.users.entry(user).or_default().push(shared.clone());
        shared
    }

    /// Forgets a session and drops all its subscriptions.
    pub(crate) fn unregister_session(&self, session: &SessionShared) {
        self.sessions.remove(&session.id);
        if let dashmap::mapref::entry::Entry::Occupied(mut e) = self.users.entry(session.user) {
            e.get_mut().retain(|s| s.id != session.id);
            if e.get().is_empty() {
                e.remove();
            }
        }
        let rooms: Vec<RoomId> = lock(&session.rooms).drain().collect();
        for room in rooms {
            if let Some(ch) = self.channel(room) {
                ch.remove_session(session.id);
                self.drop_channel_if_empty(room);
            }
        }
    }

    pub(crate) fn user_sessions(&self, user: UserId) -> Vec<Arc<SessionShared>> {
        self.users.get(&user).map(|v| v.clone()).unwrap_or_default()
    }

    pub(crate) fn close_user(&self, user: UserId, reason: CloseReason) -> usize {
        let sessions = self.user_sessions(user);
        for s in &sessions {
            s.close.close(reason);
        }
        sessions.len()
    }

    pub(crate) fn close_token(&self, token_hash: &[u8; 32], reason: CloseReason) -> usize {
        let mut n = 0;
        for s in self.sessions.iter() {
            if s.token_hash.as_ref() == Some(token_hash) {
                s.close.close(reason);
                n += 1;
            }
        }
        n
    }

    pub(crate) fn close_all(&self, reason: CloseReason) {
        for s in self.sessions.iter() {
            s.close.close(reason);
        }
    }

    /// Queues a frame for every session of `user` (only those subscribed to `room`, if given).
    pub(crate) fn send_to_user(
        &self,
        user: UserId,
        room: Option<RoomId>,
        frame: Arc<Outgoing>,
    ) -> usize {
        let mut n = 0;
        for s in self.user_sessions(user) {
            if let Some(room) = room {
                if !lock(&s.rooms).contains(&room) {
                    continue;
                }
            }
            if s.push(frame.clone()) {
                n += 1;
            }
        }
        n
    }

    // ----- rooms -----

    fn channel(&self, room: RoomId) -> Option<Arc<RoomChannel>> {
        self.rooms.get(&room).map(|c| c.clone())
    }

    fn drop_channel_if_empty(&self, room: RoomId) {
        self.rooms.remove_if(&room, |_, ch| {
            let mut g = ch.lock();
            if g.subs.is_empty() {
                g.dead = true;
                true
            } else {
                false
            }
        });
    }

    /// Step one of a subscribe: register the session as `Syncing`. From here on the channel
    /// knows of it, so a removal of the user finds it (see the module docs). Returns `false`
    /// if the session is over its subscription limit.
    ///
    /// A re-subscribe leaves the session's subscription as it is: a live one goes on
    /// delivering until `finish_subscribe` restarts it at the end of the new replay, and an
    /// attempt that fails (`abort_subscribe`) leaves it untouched. A subscription therefore
    /// ends only with an `unsubscribed` frame, the client's own `unsubscribe` or `leave`, or
    /// the session's end — never silently with a refused request.
    pub(crate) fn begin_subscribe(&self, session: &Arc<SessionShared>, room: RoomId) -> bool {
        {
            let mut rooms = lock(&session.rooms);
            if !rooms.contains(&room) && rooms.len() >= self.limits.max_subscriptions_per_session {
                return false;
            }
            rooms.insert(room);
        }
        loop {
            let ch = self
                .rooms
                .entry(room)
                .or_insert_with(|| {
                    Arc::new(RoomChannel::new(
                        room,
                        self.limits.presence_broadcast_max,
                        self.limits.session_queue,
                        self.epoch.clone(),
                    ))
                })
                .clone();
            let mut g = ch.lock();
            if g.dead {
                // Removed between the look-up and the lock; a fresh channel will be made.
                continue;
            }
            if !g.index.contains_key(&session.id) {
                let idx = g.subs.len();
                g.subs.push(Sub {
                    queue: session.queue.clone(),
                    session: session.clone(),
                    state: SubState::Syncing,
                    slot: session.queue.slot(),
                    cell: None,
                });
                g.index.insert(session.id, idx);
            }
            return true;
        }
    }

    /// Step two: the store has been read up to `history_last`. Queues `reply` (which must
    /// carry the replay up to `history_last`), then the buffered entries above it, and makes
    /// the subscription live.
    pub(crate) fn finish_subscribe(
        &self,
        session: &SessionShared,
        room: RoomId,
        history_last: Seq,
        reply: impl FnOnce() -> Arc<Outgoing>,
    ) -> FinishOutcome {
        let Some(ch) = self.channel(room) else {
            return FinishOutcome::Removed;
        };
        let outcome = ch.finish_subscribe(session.id, history_last, reply);
        if outcome == FinishOutcome::Removed {
            lock(&session.rooms).remove(&room);
            self.drop_channel_if_empty(room);
        }
        outcome
    }

    /// Undoes `begin_subscribe` (the subscribe failed): drops a subscription that was still
    /// `Syncing`, and leaves a live one (this was a re-subscribe) as it was.
    pub(crate) fn abort_subscribe(&self, session: &SessionShared, room: RoomId) {
        let live = self
            .channel(room)
            .is_some_and(|ch| ch.abort_subscribe(session.id));
        if !live {
            lock(&session.rooms).remove(&room);
        }
        self.drop_channel_if_empty(room);
    }

    /// Removes one session's subscription (no frame is sent to it). Returns whether it was
    /// subscribed.
    pub(crate) fn unsubscribe(&self, session: &SessionShared, room: RoomId) -> bool {
        let was = lock(&session.rooms).remove(&room);
        if let Some(ch) = self.channel(room) {
            ch.remove_session(session.id);
            self.drop_channel_if_empty(room);
        }
        was
    }

    /// Removes every session of `user` from `room` and tells each why. When this returns, no
    /// further entry of the room is queued for those sessions.
    pub(crate) fn remove_user(&self, room: RoomId, user: UserId, reason: UnsubscribeReason) {
        let Some(ch) = self.channel(room) else {
            return;
        };
        ch.remove_user(
            user,
            &Outgoing::event(ServerFrame::Unsubscribed { room, reason }),
        );
        self.drop_channel_if_empty(room);
    }

    /// Removes every subscription to `room` (it was deleted) and tells each session why. No
    /// presence events: there is nobody left to tell.
    pub(crate) fn remove_room(&self, room: RoomId, reason: UnsubscribeReason) {
        let Some(ch) = self.channel(room) else {
            return;
        };
        ch.remove_all(&Outgoing::event(ServerFrame::Unsubscribed { room, reason }));
        self.drop_channel_if_empty(room);
    }

    /// Users with a live subscription to `room` on this node.
    pub(crate) fn online_in(&self, room: RoomId) -> HashSet<UserId> {
        self.channel(room)
            .map(|ch| ch.lock().online.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Feeds a sequenced entry to the room's sequencer. Returns a fill request when a gap
    /// opened that the engine should repair from the store.
    pub(crate) fn deliver(
        &self,
        room: RoomId,
        seq: Seq,
        frame: Arc<Outgoing>,
    ) -> Option<FillRequest> {
        let ch = self.channel(room)?;
        let (needs_fill, emptied) = ch.on_entry(seq, frame, &self.limits);
        if emptied {
            // Only when slow consumers were just dropped: the common path never takes the
            // map's write lock.
            self.drop_channel_if_empty(room);
        }
        needs_fill.then_some(FillRequest { room })
    }

    /// Queues an ephemeral frame (typing, presence, member changes) to every live subscriber
    /// of `room`, except the sessions of `except`.
    pub(crate) fn broadcast(&self, room: RoomId, frame: Arc<Outgoing>, except: Option<UserId>) {
        if let Some(ch) = self.channel(room) {
            let emptied = {
                let mut g = ch.lock();
                g.broadcast(&frame, except);
                let any = !g.overflowed.is_empty();
                g.reap();
                any && g.subs.is_empty()
            };
            if emptied {
                self.drop_channel_if_empty(room);
            }
        }
    }

    /// For the gap filler: the room's delivery position and the highest seq seen, if there is
    /// a gap between them.
    pub(crate) fn gap(&self, room: RoomId) -> Option<(Seq, Seq)> {
        let ch = self.channel(room)?;
        let mut g = ch.lock();
        match g.last {
            Some(last) if g.highest_seen > last => Some((last, g.highest_seen)),
            _ => {
                g.fill_scheduled = false;
                None
            }
        }
    }

    /// For the gap filler: the store has nothing between `last` and the next pending entry
    /// (it was lost or removed); stop waiting for it.
    pub(crate) fn skip_gap(&self, room: RoomId, last_seen: Seq) {
        if let Some(ch) = self.channel(room) {
            let mut g = ch.lock();
            if g.last == Some(last_seen) {
                if let Some((&first, _)) = g.pending.first_key_value() {
                    tracing::warn!(%room, from = %last_seen.next(), to = first.0 - 1, "skipping seqs missing from the store");
                    g.last = Some(Seq(first.0 - 1));
                    g.drain();
                    g.reap();
                } else {
                    g.highest_seen = last_seen;
                }
            }
        }
    }
}

/// The entries a room released recently on this node, shared by every session reading the
/// room: appended once per entry by the publisher (under the channel's lock), read by each
/// session's writer with its own cursor. Entries are in ascending seq order (a skipped gap
/// leaves a hole).
#[derive(Debug)]
pub(crate) struct RoomRing {
    /// `(seq, epoch, frame)`: the epoch is the node-wide release count when it was appended,
    /// which orders it against the frames queued for each session (stamped with the same
    /// count): a frame stamped before an entry's release goes out before it, and after it
    /// otherwise.
    entries: RwLock<VecDeque<(Seq, u64, Arc<Outgoing>)>>,
    epoch: Arc<AtomicU64>,
    /// The highest seq appended (0 before the first).
    released: AtomicU64,
    /// The highest seq dropped (0 before the first): a cursor that still wants it has lagged.
    evicted: AtomicU64,
}

/// A cursor asked for an entry the ring no longer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lagged;

impl RoomRing {
    fn new(epoch: Arc<AtomicU64>) -> RoomRing {
        RoomRing {
            entries: RwLock::new(VecDeque::new()),
            epoch,
            released: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        }
    }

    /// The highest seq released into the ring.
    pub(crate) fn released(&self) -> Seq {
        Seq(self.released.load(Ordering::SeqCst))
    }

    /// Appends an entry, under one write lock with the upkeep: first drops the entries below
    /// `trim` (every reader has them), then, at `cap + batch` entries, the oldest `batch` (one
    /// slow-consumer check per batch, not per entry). Returns the highest seq the second
    /// step dropped.
    fn append(
        &self,
        seq: Seq,
        frame: Arc<Outgoing>,
        cap: usize,
        batch: usize,
        trim: Option<Seq>,
    ) -> Option<Seq> {
        let mut w = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if let Some(below) = trim {
            let mut trimmed = None;
            while w.front().is_some_and(|(s, _, _)| *s < below) {
                trimmed = w.pop_front().map(|(s, _, _)| s);
            }
            if let Some(d) = trimmed {
                self.evicted.fetch_max(d.0, Ordering::SeqCst);
            }
            if w.capacity() > 64 && w.len() < 16 {
                w.shrink_to(16);
            }
        }
        let mut dropped = None;
        // Up to `cap + batch`, so that a reader is cut off only when more than `cap` entries
        // behind, as a full session queue was before the rings.
        if w.len() >= cap.saturating_add(batch) {
            for _ in 0..batch.min(w.len()) {
                dropped = w.pop_front().map(|(s, _, _)| s);
            }
            if let Some(d) = dropped {
                self.evicted.fetch_max(d.0, Ordering::SeqCst);
            }
        }
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        w.push_back((seq, epoch, frame));
        self.released.store(seq.0, Ordering::SeqCst);
        dropped
    }

    /// The entries after `after`, and the highest seq dropped so far.
    fn owed_after(&self, after: Seq) -> (Vec<(Seq, u64, Arc<Outgoing>)>, Seq) {
        let r = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let start = r.partition_point(|(s, _, _)| *s <= after);
        let owed = r.range(start..).cloned().collect();
        (owed, Seq(self.evicted.load(Ordering::SeqCst)))
    }

    /// Copies the entries from `from` released at or before epoch `upto` to `out`, at most
    /// `max` of them; returns the seq to read from next time, and whether that was all. `Err`
    /// if `from` was already dropped.
    pub(crate) fn read(
        &self,
        from: Seq,
        upto: u64,
        max: usize,
        out: &mut impl Extend<Arc<Outgoing>>,
    ) -> Result<(Seq, bool), Lagged> {
        let r = self.entries.read().unwrap_or_else(|p| p.into_inner());
        if from.0 <= self.evicted.load(Ordering::SeqCst) {
            return Err(Lagged);
        }
        let mut next = from;
        let mut room = max;
        for (seq, epoch, frame) in r.range(start_of(&r, from)..) {
            if *epoch > upto {
                break;
            }
            if room == 0 {
                return Ok((next, false));
            }
            room -= 1;
            out.extend(Some(frame.clone()));
            next = seq.next();
        }
        Ok((next, true))
    }

    /// The first entry from `from`, with its epoch, if any; `Err` if `from` was dropped.
    pub(crate) fn first(&self, from: Seq) -> Result<Option<(Seq, u64, Arc<Outgoing>)>, Lagged> {
        let r = self.entries.read().unwrap_or_else(|p| p.into_inner());
        if from.0 <= self.evicted.load(Ordering::SeqCst) {
            return Err(Lagged);
        }
        Ok(r.get(start_of(&r, from))
            .map(|(s, e, f)| (*s, *e, f.clone())))
    }
}

/// The index of the first entry at or after `from`: by arithmetic when the ring has no
/// hole there (the common case), else by binary search.
fn start_of(r: &VecDeque<(Seq, u64, Arc<Outgoing>)>, from: Seq) -> usize {
    if let Some((front, _, _)) = r.front() {
        if let Ok(i) = usize::try_from(from.0.saturating_sub(front.0)) {
            if r.get(i).is_some_and(|(s, _, _)| *s == from) {
                return i;
            }
        }
    }
    r.partition_point(|(s, _, _)| *s < from)
}

/// Queued right after a `subscribed` reply: from here the session reads the room's ring
/// after `after` (what the reply's replay ends with).
#[derive(Debug)]
pub(crate) struct OpenCursor {
    pub(crate) room: RoomId,
    pub(crate) ring: Arc<RoomRing>,
    pub(crate) after: Seq,
    /// Where the writer reports how far it has read (see the module docs)…
    pub(crate) cell: Arc<AtomicU64>,
    /// …at least every this many entries: the ring's eviction batch, which is the staleness
    /// its slow-consumer check allows for.
    pub(crate) report_every: u64,
}

/// Queued with every removal of a live subscription: the session still owes the client the
/// room's entries up to `last` (released before the removal), and none after. They travel
/// with the marker (`owed`: the ring's entries after the writer's reported position), since
/// once the session is out of the room the ring no longer keeps them for it.
#[derive(Debug)]
pub(crate) struct EndCursor {
    pub(crate) room: RoomId,
    /// Where `owed` starts: the position the writer had reported for the cursor the hub
    /// knew then. A writer still behind it (an earlier cursor of a re-subscribe, whose
    /// entries the ring then dropped) had lagged.
    pub(crate) from: Seq,
    pub(crate) last: Seq,
    /// With their release epochs: a writer whose ring dropped them reads them from here,
    /// merged with its other rooms and frames as it would have read them from the ring.
    pub(crate) owed: Vec<(Seq, u64, Arc<Outgoing>)>,
    /// The ring's highest dropped seq then: a writer still wanting it had lagged.
    pub(crate) evicted: Seq,
}

impl EndCursor {
    /// The first owed entry at or after `from`, if any.
    pub(crate) fn owed_from(&self, from: Seq) -> Option<(Seq, u64, Arc<Outgoing>)> {
        let i = self.owed.partition_point(|(s, _, _)| *s < from);
        self.owed
            .get(i)
            .filter(|(s, _, _)| *s <= self.last)
            .cloned()
    }
}

/// A room's live state on this node.
struct RoomChannel {
    inner: Mutex<RoomInner>,
}

struct RoomInner {
    room: RoomId,
    /// Set when the channel left the map; a subscriber that finds it must look again.
    dead: bool,
    /// The highest seq released to live subscribers; `None` until the first subscriber has
    /// read the store and so told the channel where the log stands.
    last: Option<Seq>,
    /// The highest seq that has arrived (delivered or pending).
    highest_seen: Seq,
    /// Entries that arrived ahead of `last + 1`, waiting for their predecessors.
    pending: BTreeMap<Seq, Arc<Outgoing>>,
    /// A gap fill is scheduled or running.
    fill_scheduled: bool,
    subs: Vec<Sub>,
    index: HashMap<SessionId, usize>,
    /// Live subscribed sessions per user (presence is per user, not per session).
    online: HashMap<UserId, u32>,
    /// Subscribers closed as slow consumers during the current operation (a full queue, or
    /// lagging the ring).
    overflowed: Vec<SessionId>,
    /// Presence is broadcast only while the room has at most this many subscribers
    /// ([`Limits::presence_broadcast_max`]).
    presence_max: usize,
    /// Released entries, read by the subscribers' writers.
    ring: Arc<RoomRing>,
    /// Every reader had read the entries below this seq at the last publish (all were
    /// parked): the next append drops them, under its own write lock.
    trim_at: Option<Seq>,
    /// The ring's capacity ([`Limits::session_queue`]) and its eviction batch (a quarter).
    ring_cap: usize,
    ring_batch: usize,
}

struct Sub {
    /// The session's queue, held directly: `fan_out` reaches it only to wake a parked writer,
    /// `broadcast` to push an event.
    queue: Arc<Queue>,
    session: Arc<SessionShared>,
    state: SubState,
    /// The queue's slot, read for every entry released (is the writer parked?).
    slot: SlotRef,
    /// While live: how far the session's writer reports having read the ring.
    cell: Option<Arc<AtomicU64>>,
}

impl Sub {
    /// Queues a frame; on overflow closes the session as a slow consumer. Returns whether it
    /// was queued. [`SessionShared::push`] does the same through the session; this one
    /// reaches the queue held here, so a broadcast to a room touches no session's own line
    /// unless the push fails.
    fn push(&self, frame: Arc<Outgoing>) -> bool {
        match self.queue.push(frame) {
            Ok(()) => true,
            Err(PushError::Full) => {
                self.session.close.close(CloseReason::SlowConsumer);
                false
            }
            Err(PushError::Closed) => false,
        }
    }
}

enum SubState {
    /// Reading the store; receives nothing until `finish_subscribe` makes it live.
    Syncing,
    /// Reading the ring (its cursor opened after the replay).
    Live,
}

impl RoomChannel {
    fn new(
        room: RoomId,
        presence_max: usize,
        ring_cap: usize,
        epoch: Arc<AtomicU64>,
    ) -> RoomChannel {
        let ring_cap = ring_cap.max(1);
        RoomChannel {
            inner: Mutex::new(RoomInner {
                room,
                dead: false,
                last: None,
                highest_seen: Seq::ZERO,
                pending: BTreeMap::new(),
                fill_scheduled: false,
                subs: Vec::new(),
                index: HashMap::new(),
                online: HashMap::new(),
                overflowed: Vec::new(),
                presence_max,
                ring: Arc::new(RoomRing::new(epoch)),
                ring_cap,
                ring_batch: (ring_cap / 4).max(1),
                trim_at: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, RoomInner> {
        lock(&self.inner)
    }

    /// Returns whether a gap fill should be scheduled, and whether dropping slow consumers
    /// left the channel empty.
    fn on_entry(&self, seq: Seq, frame: Arc<Outgoing>, limits: &Limits) -> (bool, bool) {
        let mut g = self.lock();
        if g.dead {
            return (false, false);
        }
        if seq > g.highest_seen {
            g.highest_seen = seq;
        }
        let mut fill = false;
        match g.last {
            Some(last) if seq <= last => {}
            // The common case: the next seq, nothing waiting. Straight out.
            Some(last) if seq == last.next() && g.pending.is_empty() => {
                g.fan_out(seq, &frame);
                g.last = Some(seq);
            }
            _ => {
                if g.pending.len() >= limits.max_reorder_buffer {
                    // Bounded: forget the newest; the gap filler reads it back from the store
                    // because `highest_seen` still remembers it.
                    g.pending.pop_last();
                }
                g.pending.insert(seq, frame);
                if g.last.is_some() {
                    g.drain();
                    if g.highest_seen > g.last.unwrap_or(Seq::ZERO) && !g.fill_scheduled {
                        g.fill_scheduled = true;
                        fill = true;
                    }
                }
            }
        }
        let any_overflow = !g.overflowed.is_empty();
        g.reap();
        (fill, any_overflow && g.subs.is_empty())
    }

    fn finish_subscribe(
        &self,
        session: SessionId,
        history_last: Seq,
        reply: impl FnOnce() -> Arc<Outgoing>,
    ) -> FinishOutcome {
        let mut g = self.lock();
        let Some(&idx) = g.index.get(&session) else {
            return FinishOutcome::Removed;
        };
        match g.last {
            // The room released entries past our read while we read: they are committed
            // (`last` never passes a committed seq), so read them and come back.
            Some(last) if last > history_last => return FinishOutcome::Behind(last),
            Some(_) => {}
            None => {
                // First subscriber to go live: the log stands at `history_last`. Entries at or
                // below it that are still on their way are in every subscriber's replay.
                g.last = Some(history_last);
                g.pending = g.pending.split_off(&history_last.next());
            }
        }
        // A re-subscribe of a live subscription: it is counted online already, and others see
        // no presence change.
        let was_live = matches!(
            std::mem::replace(&mut g.subs[idx].state, SubState::Live),
            SubState::Live
        );
        let sub_session = g.subs[idx].session.clone();
        let cell = Arc::new(AtomicU64::new(history_last.0));
        let open = Item::Open(Arc::new(OpenCursor {
            room: g.room,
            ring: g.ring.clone(),
            after: history_last,
            cell: cell.clone(),
            report_every: g.ring_batch as u64,
        }));
        g.subs[idx].cell = Some(cell);
        if !sub_session.push(reply()) || !sub_session.push_item(open) {
            if !was_live {
                // Never counted online: leave the presence of the user's other sessions be.
                g.subs[idx].state = SubState::Syncing;
            }
            g.overflowed.push(session);
            g.reap();
            return FinishOutcome::Removed;
        }
        // Entries above our read that already arrived out of order follow now, in order.
        g.drain();
        let fill = g.last.is_some_and(|l| g.highest_seen > l) && !g.fill_scheduled;
        if fill {
            g.fill_scheduled = true;
        }
        // Presence: count the session once it is live.
        let user = sub_session.user;
        if !was_live {
            let count = g.online.entry(user).or_insert(0);
            *count += 1;
            if *count == 1 && g.subs.len() <= g.presence_max {
                let frame = Outgoing::event(ServerFrame::Presence {
                    room: g.room,
                    user: sub_session.info(),
                    online: true,
                });
                g.broadcast(&frame, Some(user));
            }
        }
        let removed = g.overflowed.contains(&session);
        g.reap();
        if removed {
            FinishOutcome::Removed
        } else {
            FinishOutcome::Live { fill }
        }
    }

    fn remove_session(&self, session: SessionId) {
        let mut g = self.lock();
        g.remove_sub(session);
        g.reap();
    }

    /// Drops the session's subscription if it is still `Syncing`. Returns whether a live one
    /// remains.
    fn abort_subscribe(&self, session: SessionId) -> bool {
        let mut g = self.lock();
        let live = match g.index.get(&session) {
            Some(&idx) => matches!(g.subs[idx].state, SubState::Live),
            None => return false,
        };
        if !live {
            g.remove_sub(session);
            g.reap();
        }
        live
    }

    /// Removes `user`'s subscriptions and queues `farewell` (an `unsubscribed` frame) for each,
    /// all under the lock: a re-subscribe of one of those sessions, which goes live under the
    /// same lock, then comes wholly before (and is removed) or wholly after (and stays, with
    /// its room in the session's set and its reply after the farewell).
    fn remove_user(&self, user: UserId, farewell: &Arc<Outgoing>) {
        let mut g = self.lock();
        let ids: Vec<SessionId> = g
            .subs
            .iter()
            .filter(|s| s.session.user == user)
            .map(|s| s.session.id)
            .collect();
        for id in ids {
            if let Some(s) = g.remove_sub(id) {
                g.farewell(&s, farewell);
            }
        }
        g.reap();
    }

    /// Removes every subscription (the room was deleted), without presence events: there is
    /// nobody left to tell.
    fn remove_all(&self, farewell: &Arc<Outgoing>) {
        let mut g = self.lock();
        g.index.clear();
        g.online.clear();
        g.overflowed.clear();
        for sub in std::mem::take(&mut g.subs) {
            g.end_cursor(&sub);
            g.farewell(&sub.session, farewell);
        }
    }
}

impl RoomInner {
    /// Tells a removed session why, and takes the room out of its set.
    fn farewell(&self, session: &SessionShared, frame: &Arc<Outgoing>) {
        lock(&session.rooms).remove(&self.room);
        session.push(frame.clone());
    }

    /// Releases pending entries that continue the sequence.
    fn drain(&mut self) {
        let Some(mut last) = self.last else { return };
        while let Some(entry) = self.pending.first_entry() {
            let seq = *entry.key();
            if seq <= last {
                entry.remove();
                continue;
            }
            if seq != last.next() {
                break;
            }
            let frame = entry.remove();
            self.fan_out(seq, &frame);
            last = seq;
        }
        self.last = Some(last);
    }

    /// The hot path: the entry goes into the ring once; per live subscriber, one load to see
    /// whether its writer is parked (and a wake-up if it is).
    fn fan_out(&mut self, seq: Seq, frame: &Arc<Outgoing>) {
        let trim = self.trim_at.take();
        if let Some(dropped) =
            self.ring
                .append(seq, frame.clone(), self.ring_cap, self.ring_batch, trim)
        {
            self.cut_lagging(dropped);
        }
        let mut all_parked = true;
        for sub in self.subs.iter() {
            if matches!(sub.state, SubState::Live)
                && !(sub.slot.may_be_parked() && sub.queue.wake_if_parked())
            {
                all_parked = false;
            }
        }
        if all_parked {
            // Every reader had read everything before this entry when it parked. Dropped at
            // the next append, so that a publish takes the ring's write lock once; a reader
            // only moves forward, and one that joins later starts after this entry.
            self.trim_at = Some(seq);
        }
    }

    /// After the ring dropped entries up to `dropped`: closes the sessions whose writers
    /// provably still needed one (their reported position is a batch and a round behind,
    /// more than a report can lag), and wakes those that might (they find out themselves).
    fn cut_lagging(&mut self, dropped: Seq) {
        // A report lags the writer by less than a batch, plus what one read took before it
        // was reported (at most a round, at most the ring).
        let batch = self.ring_batch as u64;
        let round = crate::session::ROUND_MAX.min(self.ring_cap + self.ring_batch) as u64;
        let slack = batch + round;
        for sub in self.subs.iter() {
            let Some(cell) = &sub.cell else { continue };
            let at = cell.load(Ordering::SeqCst);
            if at >= dropped.0 {
                continue;
            }
            if at.saturating_add(slack) <= dropped.0 {
                sub.session.close.close(CloseReason::SlowConsumer);
                self.overflowed.push(sub.session.id);
            } else {
                sub.queue.wake_if_parked();
            }
        }
    }

    /// Queues the end of a live subscription's cursor (see [`EndCursor`]).
    fn end_cursor(&self, sub: &Sub) {
        // A session closing for any reason but shutdown reads no ring again (see `Outbox`),
        // and a closed queue has no reader: neither needs its end, nor the entries it owed.
        // Keyed on the closing flag, which the writer checks (after each read too): the
        // reason is set before it, so a writer that could still read the room would find
        // the flag set by the time it could read past this removal.
        let ending = if sub.queue.is_closing() {
            matches!(sub.session.close.reason(), Some(CloseReason::Shutdown))
        } else {
            !sub.queue.is_closed()
        };
        if ending && matches!(sub.state, SubState::Live) {
            let reported = sub.cell.as_ref().map_or(0, |c| c.load(Ordering::SeqCst));
            let (owed, evicted) = self.ring.owed_after(Seq(reported));
            let end = Item::End(Arc::new(EndCursor {
                room: self.room,
                from: Seq(reported).next(),
                last: self.ring.released(),
                owed,
                evicted,
            }));
            // Never refused (the cursor would read on past the removal); over the queue's
            // capacity, the session is closed as a slow consumer.
            if sub.queue.push_end(end) == Err(PushError::Full) {
                sub.session.close.close(CloseReason::SlowConsumer);
            }
        }
    }

    fn broadcast(&mut self, frame: &Arc<Outgoing>, except: Option<UserId>) {
        for sub in self.subs.iter() {
            if matches!(sub.state, SubState::Live)
                && Some(sub.session.user) != except
                && !sub.push(frame.clone())
            {
                self.overflowed.push(sub.session.id);
            }
        }
    }

    /// Removes subscribers whose queues overflowed (repeatedly: telling the room that one went
    /// offline may overflow another).
    fn reap(&mut self) {
        while let Some(id) = self.overflowed.pop() {
            if let Some(s) = self.remove_sub(id) {
                lock(&s.rooms).remove(&self.room);
            }
        }
    }

    fn detach(&mut self, session: SessionId) -> Option<Sub> {
        let idx = self.index.remove(&session)?;
        let sub = self.subs.swap_remove(idx);
        if idx < self.subs.len() {
            let moved = self.subs[idx].session.id;
            self.index.insert(moved, idx);
        }
        Some(sub)
    }

    /// Counts one live session of `user` less; returns whether that was their last one.
    fn went_offline(&mut self, user: UserId) -> bool {
        match self.online.get_mut(&user) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            Some(_) => {
                self.online.remove(&user);
                true
            }
            None => false,
        }
    }

    fn remove_sub(&mut self, session: SessionId) -> Option<Arc<SessionShared>> {
        let sub = self.detach(session)?;
        self.end_cursor(&sub);
        let user = sub.session.user;
        let offline = match sub.state {
            SubState::Live => self.went_offline(user),
            SubState::Syncing => false,
        };
        // Counted with the leaving subscriber, as `finish_subscribe` counts the arriving one.
        if offline && self.subs.len() < self.presence_max {
            let frame = Outgoing::event(ServerFrame::Presence {
                room: self.room,
                user: sub.session.info(),
                online: false,
            });
            self.broadcast(&frame, Some(user));
        }
        Some(sub.session)
    }
}

/// Locks a std mutex, recovering from poisoning: every critical section here leaves the data
/// consistent at each step, so a panic elsewhere must not take the hub down with it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Builds the fan-out frame of a log entry.
pub(crate) fn entry_frame(entry: &crate::model::LogEntry) -> Arc<Outgoing> {
    Outgoing::event(ServerFrame::Message(Entry::from(entry)))
}
