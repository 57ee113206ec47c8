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
use crate::hub::{CloseReason, EndCursor, FinishOutcome, Lagged, RoomRing, SessionShared};
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
use std::sync::atomic::Ordering::SeqCst;
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

/// An [`Outbox`]'s state: what every receive reads inline (the slot, the epoch, the first
/// room's cursor), the rest in [`More`], which exists only while needed. Not boxed as a
/// whole: that saved about 0.4 KiB per idle TCP connection (the state is held in more than
/// one place of a connection's futures), but each receive then read a separate allocation,
/// and the fan-out bench went from 1.7× to 3.7× the broadcast floor at 10 000 subscribers
/// (docs/BENCHMARKS.md). `repr(C)`: the fields a receive reads come first, in one line.
#[repr(C)]
struct OutboxState {
    /// The queue's slot, checked before taking the queue's lock.
    slot: SlotRef,
    /// The node's release epoch (see the hub's module docs).
    epoch: Arc<AtomicU64>,
    /// `None` is the common case: one room (or none), nothing staged, no round unfinished;
    /// then a receive reads the first room's ring directly.
    more: Option<Box<More>>,
    /// The first room this writer reads (most sessions read one or a few).
    first: Option<Cursor>,
    /// Held directly (not through `shared`).
    queue: Arc<Queue>,
    shared: Arc<SessionShared>,
    /// Tests: runs between the queue's park and the last look at the rings, where other
    /// threads may push and publish.
    #[cfg(test)]
    park_hook: Option<Box<dyn FnMut() + Send>>,
}

/// What a writer holds beyond one room read straight from its ring: allocated when first
/// needed, and given back as soon as it is empty again (so an idle session, and a busy one
/// in one room, hold none).
#[derive(Default)]
struct More {
    /// The rooms after the first.
    rest: Vec<Cursor>,
    /// Frames taken from the queue and the rings, in the order they go out: about
    /// [`ROUND_MAX`] at most, plus the frame applied after the last check.
    staged: VecDeque<Arc<Outgoing>>,
    /// Items taken from the queue, with their stamps, not yet applied: a round stopped at
    /// [`ROUND_MAX`] before it got to them.
    items: VecDeque<(Item, u64)>,
    /// The epoch of the last take, until the round that applies its items has also sent the
    /// rings' entries up to it.
    taken_at: Option<u64>,
}

impl More {
    fn is_empty(&self) -> bool {
        self.rest.is_empty()
            && self.staged.is_empty()
            && self.items.is_empty()
            && self.taken_at.is_none()
    }
}

/// About how many frames a round stages before it stops (see [`Outbox`]). The pump writes at
/// most its batch (64 by default) at a time anyway; a larger round only holds more.
pub(crate) const ROUND_MAX: usize = 256;

/// Whether a round went to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Everything it was asked to stage is staged.
    Done,
    /// It stopped at [`ROUND_MAX`] (or the session lagged and is closing).
    Stopped,
}

/// Moves `taken` behind `items`: by swapping buffers when `items` is empty (the common case:
/// `append` would allocate `items` anew and copy).
fn join(items: &mut VecDeque<(Item, u64)>, taken: &mut VecDeque<(Item, u64)>) {
    if items.is_empty() {
        std::mem::swap(items, taken);
    } else {
        items.append(taken);
    }
}

/// The first end marker for `room` among `items`.
fn end_of(items: &VecDeque<(Item, u64)>, room: RoomId) -> Option<&EndCursor> {
    items.iter().find_map(|(i, _)| match i {
        Item::End(end) if end.room == room => Some(&**end),
        _ => None,
    })
}

/// One room read from its ring. `repr(C)`: what a receive reads first.
#[repr(C)]
struct Cursor {
    ring: Arc<RoomRing>,
    /// The next seq to take.
    next: Seq,
    /// Where the hub reads how far this writer has read; `reported` is what was last stored.
    reported: u64,
    /// Report at least every this many entries: the hub's slow-consumer check allows a
    /// report to be up to one eviction batch behind ([`OpenCursor::report_every`]).
    report_every: u64,
    cell: Arc<AtomicU64>,
    /// Every entry not yet taken was released after this epoch (a lower bound, kept by the
    /// merge across rooms so that it can skip a ring without locking it).
    unread_after: u64,
    room: RoomId,
}

impl Cursor {
    /// Takes the ring's entries released up to epoch `upto`, at most `max` of them; whether
    /// it took all there were. `Err` if the writer fell behind the ring.
    fn read(
        &mut self,
        upto: u64,
        max: usize,
        out: &mut impl Extend<Arc<Outgoing>>,
    ) -> Result<bool, Lagged> {
        let (next, all) = self.ring.read(self.next, upto, max, out)?;
        self.next = next;
        self.note_read();
        Ok(all)
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

impl Drop for OutboxState {
    fn drop(&mut self) {
        // Nobody will write these frames: refuse new ones so the hub drops the subscriber.
        self.queue.close();
    }
}

impl OutboxState {
    fn new(queue: Arc<Queue>, shared: Arc<SessionShared>) -> OutboxState {
        OutboxState {
            slot: queue.slot(),
            epoch: queue.epoch(),
            more: None,
            first: None,
            queue,
            shared,
            #[cfg(test)]
            park_hook: None,
        }
    }

    async fn recv(&mut self) -> Outbound {
        loop {
            if let Pumped::Out(out) = std::future::poll_fn(|cx| self.poll_next(cx, false)).await {
                return out;
            }
        }
    }

    async fn recv_or_probe(&mut self) -> Pumped {
        std::future::poll_fn(|cx| self.poll_next(cx, true)).await
    }

    fn poll_next(&mut self, cx: &mut Context<'_>, probes: bool) -> Poll<Pumped> {
        loop {
            // What is staged, the rest of a round, or (nothing queued) the rings alone: no
            // lock. With something queued, the queue's own look below comes first, so that a
            // probe request waits at most for the rest of a round, not behind a busy room.
            if !self.queue.is_closing()
                && (self.staged_len() > 0 || self.unfinished() || !self.slot.pending())
            {
                if let Some(f) = self.try_recv() {
                    return Poll::Ready(Pumped::Out(Outbound::Frame(f)));
                }
                if self.unfinished() {
                    continue;
                }
            }
            // Items go behind those not yet applied (there are none unless closing). Taken
            // into a buffer of its own, which allocates only if there are items.
            let mut taken = VecDeque::new();
            match self.queue.poll_take(cx, probes, &mut taken) {
                Taken::Close(reason) => return Poll::Ready(Pumped::Out(Outbound::Close(reason))),
                Taken::Probe => return Poll::Ready(Pumped::Probe),
                Taken::Items(epoch) => {
                    let more = self.more();
                    join(&mut more.items, &mut taken);
                    more.taken_at = Some(epoch);
                    self.advance();
                }
                Taken::Parked(epoch) => {
                    // Parked first, then a last look at the rings up to the epoch read under
                    // the queue's lock: a frame queued later is stamped at least that, and a
                    // publisher releasing an entry later sees the writer parking and wakes
                    // it. (An epoch read now could take an entry released after a frame
                    // queued since: a kick's end marker, a `sent` acknowledgement.)
                    #[cfg(test)]
                    if let Some(hook) = &mut self.park_hook {
                        hook();
                    }
                    if self.anything_up_to(epoch) {
                        self.more().taken_at = Some(epoch);
                        self.advance();
                    }
                    if self.staged_len() > 0 || self.unfinished() || self.queue.is_closing() {
                        self.queue.unpark();
                        continue;
                    }
                    for c in self.cursors_mut() {
                        c.report();
                    }
                    // Give the buffers back: idle sessions should stay small.
                    if let Some(more) = &mut self.more {
                        more.staged = VecDeque::new();
                        more.items = VecDeque::new();
                    }
                    self.tidy();
                    if !self.queue.settle() {
                        // Woken during the look: look again.
                        continue;
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// [`More`], made if there is none.
    fn more(&mut self) -> &mut More {
        self.more.get_or_insert_with(Box::default)
    }

    /// Gives [`More`] back if it holds nothing.
    fn tidy(&mut self) {
        if self.more.as_ref().is_some_and(|m| m.is_empty()) {
            self.more = None;
        }
    }

    fn staged_len(&self) -> usize {
        self.more.as_ref().map_or(0, |m| m.staged.len())
    }

    fn pop_staged(&mut self) -> Option<Arc<Outgoing>> {
        let more = self.more.as_mut()?;
        let f = more.staged.pop_front();
        if more.is_empty() {
            self.more = None;
        }
        f
    }

    fn cursors(&self) -> impl Iterator<Item = &Cursor> {
        self.first
            .iter()
            .chain(self.more.iter().flat_map(|m| m.rest.iter()))
    }

    fn cursors_mut(&mut self) -> impl Iterator<Item = &mut Cursor> {
        self.first
            .iter_mut()
            .chain(self.more.iter_mut().flat_map(|m| m.rest.iter_mut()))
    }

    /// Adds a cursor, replacing the room's current one (a re-subscribe restarts it).
    fn insert(&mut self, cursor: Cursor) {
        if let Some(c) = self.cursors_mut().find(|c| c.room == cursor.room) {
            *c = cursor;
        } else if self.first.is_none() {
            self.first = Some(cursor);
        } else {
            self.more().rest.push(cursor);
        }
    }

    fn remove(&mut self, room: RoomId) -> Option<Cursor> {
        if self.first.as_ref().is_some_and(|c| c.room == room) {
            let c = self.first.take();
            if let Some(more) = &mut self.more {
                if !more.rest.is_empty() {
                    self.first = Some(more.rest.swap_remove(0));
                }
            }
            return c;
        }
        let rest = &mut self.more.as_mut()?.rest;
        let i = rest.iter().position(|c| c.room == room)?;
        Some(rest.swap_remove(i))
    }

    /// For the last look before parking: whether any ring may have an entry released up to
    /// `epoch` (without making [`More`] when the one room has none).
    fn anything_up_to(&self, epoch: u64) -> bool {
        if self.more.is_some() {
            return true;
        }
        self.first
            .as_ref()
            .is_some_and(|c| match c.ring.first(c.next) {
                Ok(Some((_, e, _))) => e <= epoch,
                Ok(None) => false,
                // The round finds out whether it lagged.
                Err(Lagged) => true,
            })
    }

    /// Whether a round stopped before its end (items, or rings up to `taken_at`, left).
    fn unfinished(&self) -> bool {
        self.more
            .as_ref()
            .is_some_and(|m| !m.items.is_empty() || m.taken_at.is_some())
    }

    /// One round without waiting (see the type's docs), or the rest of an unfinished one.
    fn round(&mut self) {
        if !self.unfinished() {
            // The epoch before the pending bit: a frame missed here is stamped later than
            // every entry sent up to it.
            let epoch = self.epoch.load(SeqCst);
            if self.slot.pending() {
                let mut taken = VecDeque::new();
                let at = self.queue.take_all(&mut taken);
                let more = self.more();
                join(&mut more.items, &mut taken);
                more.taken_at = Some(at);
            } else {
                self.more().taken_at = Some(epoch);
            }
        }
        self.advance();
        self.tidy();
    }

    /// Goes on with the round: the items taken, in order, each after the rings' entries
    /// released before it was queued; then the rings up to the take's epoch.
    fn advance(&mut self) -> Step {
        loop {
            if self.staged_len() >= ROUND_MAX {
                return Step::Stopped;
            }
            let Some(more) = &self.more else {
                return Step::Done;
            };
            if let Some(&(_, stamp)) = more.items.front() {
                if self.send_rings(stamp) == Step::Stopped {
                    return Step::Stopped;
                }
                if let Some((item, _)) = self.more.as_mut().and_then(|m| m.items.pop_front()) {
                    self.apply(item);
                }
                continue;
            }
            let Some(epoch) = more.taken_at else {
                return Step::Done;
            };
            if self.send_rings(epoch) == Step::Stopped {
                return Step::Stopped;
            }
            // A lag check may have taken more items meanwhile ([`OutboxState::fell_behind`]).
            if let Some(more) = &mut self.more {
                if more.items.is_empty() {
                    more.taken_at = None;
                    return Step::Done;
                }
            }
        }
    }

    /// Applies one item taken from the queue: a frame is staged, a cursor opened, or one
    /// ended.
    fn apply(&mut self, item: Item) {
        match item {
            Item::Frame(f) => self.more().staged.push_back(f),
            Item::Open(open) => {
                let cursor = Cursor {
                    ring: open.ring.clone(),
                    next: open.after.next(),
                    reported: open.after.0,
                    report_every: open.report_every,
                    cell: open.cell.clone(),
                    unread_after: 0,
                    room: open.room,
                };
                // A re-subscribe restarts the room after its new replay.
                self.insert(cursor);
            }
            Item::End(end) => {
                // `send_rings` up to the marker's stamp has staged what it owes (from the
                // ring, or from `owed`), unless the writer had lagged.
                if let Some(c) = self.remove(end.room) {
                    if c.next <= end.last && c.next <= end.evicted {
                        self.lagged();
                    }
                }
            }
        }
    }

    /// Stages the entries released up to `epoch` from every room read, oldest release first
    /// (one room, the common case: in one read of its ring); stops at [`ROUND_MAX`].
    fn send_rings(&mut self, epoch: u64) -> Step {
        if self.more.as_ref().is_none_or(|m| m.rest.is_empty()) {
            let staged = self.staged_len();
            let Some(c) = &mut self.first else {
                return Step::Done;
            };
            let more = self.more.get_or_insert_with(Box::default);
            match c.read(epoch, ROUND_MAX.saturating_sub(staged), &mut more.staged) {
                Ok(true) => return Step::Done,
                Ok(false) => return Step::Stopped,
                // An end marker may carry what the ring dropped: the general path sorts it out.
                Err(Lagged) => {}
            }
        }
        // Read before the looks: an entry a look does not find is released after it.
        let looked = self.epoch.load(SeqCst);
        loop {
            if self.staged_len() >= ROUND_MAX {
                return Step::Stopped;
            }
            let mut best: Option<(usize, Seq, u64, Arc<Outgoing>)> = None;
            // A cursor behind its ring: `Some(None)` a lag for certain, `Some(Some(room))`
            // unless the room's end marker is queued.
            let mut lagged = None;
            let first = &mut self.first;
            let more = self.more.get_or_insert_with(Box::default);
            let More { rest, items, .. } = &mut **more;
            for (i, c) in first.iter_mut().chain(rest.iter_mut()).enumerate() {
                if c.unread_after >= epoch {
                    // Nothing it has not read was released by `epoch`: no need to look (a
                    // session in many rooms merges before every queued item).
                    continue;
                }
                let next = match c.ring.first(c.next) {
                    Ok(next) => next,
                    Err(Lagged) => match end_of(items, c.room) {
                        // Out of the room: the ring no longer keeps its entries for this
                        // session, and the end marker carries them.
                        Some(end) if c.next > end.evicted && c.next >= end.from => {
                            end.owed_from(c.next)
                        }
                        // Lagged before it was removed, or an earlier cursor of a re-subscribe
                        // whose entries are gone (the marker owes from the later one's place).
                        Some(_) => {
                            lagged = Some(None);
                            break;
                        }
                        None => {
                            lagged = Some(Some(c.room));
                            break;
                        }
                    },
                };
                match next {
                    Some((seq, e, f)) => {
                        c.unread_after = c.unread_after.max(e.saturating_sub(1));
                        if e <= epoch && best.as_ref().is_none_or(|b| e < b.2) {
                            best = Some((i, seq, e, f));
                        }
                    }
                    None => c.unread_after = c.unread_after.max(looked),
                }
            }
            match lagged {
                Some(Some(room)) if self.fell_behind(room) => continue,
                Some(Some(_)) => return Step::Stopped,
                Some(None) => {
                    self.lagged();
                    return Step::Stopped;
                }
                None => {}
            }
            let Some((i, seq, e, f)) = best else {
                return Step::Done;
            };
            if let Some(c) = self.cursors_mut().nth(i) {
                c.next = seq.next();
                c.unread_after = e;
                c.note_read();
            }
            self.more().staged.push_back(f);
        }
    }

    /// The room's end marker, if it has been taken and not yet applied.
    fn end_of(&self, room: RoomId) -> Option<&EndCursor> {
        end_of(&self.more.as_ref()?.items, room)
    }

    /// A cursor found its next entry dropped from the ring, and no end marker for its room
    /// has been taken. A lag — unless the marker is queued but not yet taken (once a session
    /// is out of a room, the ring no longer keeps entries for it): so take the queue (its
    /// items go behind those not yet applied, as they happened) and look again. Whether the
    /// marker was there; if not, the session is closed as a slow consumer.
    fn fell_behind(&mut self, room: RoomId) -> bool {
        let mut taken = VecDeque::new();
        let epoch = self.queue.take_all(&mut taken);
        if !taken.is_empty() {
            let more = self.more();
            join(&mut more.items, &mut taken);
            more.taken_at = Some(epoch);
        }
        if self.end_of(room).is_some() {
            return true;
        }
        self.lagged();
        false
    }

    /// Whether the session is closing for a reason other than shutdown: then nothing more is
    /// handed out (a slow consumer is cut off, not served its backlog; a kicked session's
    /// end marker may not have been queued). At shutdown the backlog is still written.
    fn cut_off(&self) -> bool {
        // The pending bit first: it is in the dense slots (in cache), and a closing queue
        // keeps it set (set before the closing flag; a take leaves it set while closing),
        // so a clear bit says "not closing" without touching the queue's own line, which
        // would be a cache miss per delivery at ten thousand sessions.
        self.slot.pending()
            && self.queue.is_closing()
            && !matches!(
                self.shared.close.reason(),
                None | Some(CloseReason::Shutdown)
            )
    }

    fn lagged(&mut self) {
        self.shared.close.close(CloseReason::SlowConsumer);
    }

    fn try_recv(&mut self) -> Option<Arc<Outgoing>> {
        let f = self.try_recv_unchecked()?;
        // Checked after the read too: a removal that skipped this session's end marker (it
        // was closing) has set the flag before anything it did not end could be read.
        (!self.cut_off()).then_some(f)
    }

    fn try_recv_unchecked(&mut self) -> Option<Arc<Outgoing>> {
        if self.cut_off() {
            return None;
        }
        if let Some(f) = self.pop_staged() {
            return Some(f);
        }
        let epoch = self.epoch.load(SeqCst);
        if self.more.is_none() && !self.slot.pending() {
            // The common case, one room and nothing queued: its next entry straight back.
            let c = self.first.as_mut()?;
            match c.ring.first(c.next) {
                Ok(Some((seq, e, f))) if e <= epoch => {
                    c.next = seq.next();
                    c.note_read();
                    return Some(f);
                }
                Ok(_) => return None,
                // Is its end marker queued? The round finds out.
                Err(Lagged) => {}
            }
        }
        self.round();
        self.pop_staged()
    }

    fn drain_into(&mut self, out: &mut Vec<Arc<Outgoing>>, max: usize) -> usize {
        if self.cut_off() {
            return 0;
        }
        let before = out.len();
        while out.len() - before < max {
            if self.more.is_none() {
                // One room and nothing queued (the epoch read before the bit, as in `round`):
                // straight from its ring into `out`.
                let epoch = self.epoch.load(SeqCst);
                if !self.slot.pending() {
                    let Some(c) = &mut self.first else {
                        break;
                    };
                    // On `Lagged`: is its end marker queued? The round finds out.
                    if c.read(epoch, max - (out.len() - before), out).is_ok() {
                        break;
                    }
                }
            }
            if self.staged_len() == 0 {
                self.round();
                if self.staged_len() == 0 {
                    break;
                }
            }
            if let Some(more) = &mut self.more {
                let n = (max - (out.len() - before)).min(more.staged.len());
                out.extend(more.staged.drain(..n));
            }
            self.tidy();
        }
        if self.cut_off() {
            // As in `try_recv`: checked after the reads too.
            out.truncate(before);
        }
        out.len() - before
    }

    fn len(&self) -> usize {
        let unread: u64 = self
            .cursors()
            .map(|c| {
                c.ring
                    .released()
                    .0
                    .saturating_sub(c.next.0.saturating_sub(1))
            })
            .sum();
        let held = self
            .more
            .as_ref()
            .map_or(0, |m| m.items.len() + m.staged.len());
        self.queue.len() + held + usize::try_from(unread).unwrap_or(usize::MAX)
    }
}

/// The outbound side of a session: its bounded queue (replies and events), the rooms it
/// reads from their rings, and the close signal.
///
/// A **round** of the writer takes everything queued, with the node's release epoch at the
/// take (`E`), and applies the items in order: before each item, the rings' entries released
/// before the item was queued (epoch at most its stamp) go out, merged across rooms in release
/// order; after the last item, those released up to `E`. So every frame goes out in the order
/// it happened: the `sent` acknowledgement of your own message before your copy of it, a
/// `subscribed` reply before the room's live entries, an `unsubscribed` after the last entry
/// owed. With nothing queued (the slot's pending bit clear), a round only reads the rings.
///
/// **A round stages at most about 256 frames.** What it did not get to stays where
/// it was — entries in their rings, items in `items` — and the queue is not taken again until
/// `items` is applied (except to look for a room's end marker when a ring dropped what the
/// room was owed), so what a session holds is bounded by its queue's capacity, the items
/// taken and a round, however many rooms it reads. A writer that falls behind a ring
/// has lagged, and the session is closed as [`CloseReason::SlowConsumer`]. See the hub's
/// module docs.
pub struct Outbox(OutboxState);

impl Outbox {
    fn new(queue: Arc<Queue>, shared: Arc<SessionShared>) -> Outbox {
        Outbox(OutboxState::new(queue, shared))
    }

    /// The next frame to write, or the order to close. Close takes priority: a slow consumer
    /// is cut off without first writing its backlog.
    pub async fn recv(&mut self) -> Outbound {
        self.0.recv().await
    }

    /// [`Outbox::recv`], or a keepalive probe the pump's reader asked for
    /// ([`Session::request_probe`]).
    pub(crate) async fn recv_or_probe(&mut self) -> Pumped {
        self.0.recv_or_probe().await
    }

    /// A frame, if any, without waiting. Transports use it to batch several frames into one
    /// write and one flush.
    pub fn try_recv(&mut self) -> Option<Arc<Outgoing>> {
        self.0.try_recv()
    }

    /// Moves up to `max` frames into `out`; returns how many. The cheap way for a writer to
    /// build a batch.
    pub fn drain_into(&mut self, out: &mut Vec<Arc<Outgoing>>, max: usize) -> usize {
        self.0.drain_into(out, max)
    }

    /// Frames waiting: in the queue, taken from it, and released in the rooms read but not
    /// yet taken.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no frame is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// This session's id.
    pub fn session_id(&self) -> SessionId {
        self.0.shared.id
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

#[cfg(test)]
mod tests {
    //! The outbox's rounds against the hub's rings directly (no store): what a round holds,
    //! and the order it hands frames out in. The engine-level behaviour is in `tests/`.
    use super::*;
    use crate::config::Limits;
    use crate::hub::Hub;
    use crate::ids::UserId;
    use std::collections::HashMap;

    /// Frames told apart by pointer, with a label each (and kept alive, so that no other
    /// frame is allocated at a labelled address).
    #[derive(Default)]
    struct Labels(HashMap<usize, (Arc<Outgoing>, String)>);

    impl Labels {
        fn frame(&mut self, label: impl Into<String>) -> Arc<Outgoing> {
            let f = Outgoing::event(ServerFrame::Pong);
            self.0
                .insert(Arc::as_ptr(&f) as usize, (f.clone(), label.into()));
            f
        }

        /// The label, or `?` for a frame the hub made (presence).
        fn of(&self, f: &Arc<Outgoing>) -> String {
            self.0
                .get(&(Arc::as_ptr(f) as usize))
                .map_or_else(|| "?".into(), |(_, l)| l.clone())
        }
    }

    fn hub() -> Hub {
        Hub::new(Arc::new(Limits::default()))
    }

    /// A hub whose session queues (and rings) hold `capacity`.
    fn hub_with_queue(capacity: usize) -> Hub {
        Hub::new(Arc::new(Limits {
            session_queue: capacity,
            ..Limits::default()
        }))
    }

    /// A session live in `rooms` from seq 0, and its outbox.
    fn reader(
        hub: &Hub,
        user: u64,
        rooms: &[RoomId],
        labels: &mut Labels,
    ) -> (Arc<SessionShared>, Outbox) {
        let s = hub.register_session(UserId(user), format!("u{user}"), None);
        for &room in rooms {
            assert!(hub.begin_subscribe(&s, room));
            let reply = labels.frame(format!("subscribed {}", room.0));
            let outcome = hub.finish_subscribe(&s, room, Seq(0), || reply);
            assert!(matches!(outcome, FinishOutcome::Live { .. }), "{outcome:?}");
        }
        let outbox = Outbox::new(s.queue.clone(), s.clone());
        (s, outbox)
    }

    /// Everything `try_recv` hands out now, checking after each frame that the outbox holds
    /// at most a round.
    fn drain(outbox: &mut Outbox, labels: &Labels) -> Vec<String> {
        let mut got = Vec::new();
        while let Some(f) = outbox.try_recv() {
            assert!(
                outbox.0.staged_len() <= ROUND_MAX,
                "staged {} frames",
                outbox.0.staged_len()
            );
            got.push(labels.of(&f));
        }
        got
    }

    /// Polls the writer until it parks (has read everything); returns what it handed out.
    fn park(outbox: &mut Outbox, labels: &Labels) -> Vec<String> {
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        let mut got = Vec::new();
        while let Poll::Ready(p) = outbox.0.poll_next(&mut cx, false) {
            let Pumped::Out(Outbound::Frame(f)) = p else {
                panic!("not a frame: {p:?}");
            };
            got.push(labels.of(&f));
        }
        got
    }

    /// Four busy rooms and a frame of the session's own in the middle: a round stages at
    /// most `ROUND_MAX` frames (the rest waits in the rings and in `items`), and what comes
    /// out is still everything in the order it happened.
    #[test]
    fn a_round_is_bounded_and_keeps_the_order_across_rooms() {
        let hub = hub();
        let mut labels = Labels::default();
        let rooms: Vec<RoomId> = (1..=4).map(RoomId).collect();
        let (session, mut outbox) = reader(&hub, 1, &rooms, &mut labels);
        let mut expected: Vec<String> = rooms
            .iter()
            .map(|r| format!("subscribed {}", r.0))
            .collect();
        for i in 1..=150u64 {
            for &room in &rooms {
                let label = format!("{}:{i}", room.0);
                let f = labels.frame(label.clone());
                assert!(hub.deliver(room, Seq(i), f).is_none());
                expected.push(label);
            }
            if i == 75 {
                assert!(session.push(labels.frame("own")));
                expected.push("own".into());
            }
        }
        assert_eq!(drain(&mut outbox, &labels), expected);
        assert!(!session.close.is_closed());
    }

    /// One room with almost a full ring: read in rounds of at most `ROUND_MAX`.
    #[test]
    fn one_room_is_read_in_bounded_rounds() {
        let hub = hub();
        let mut labels = Labels::default();
        let room = RoomId(7);
        let (session, mut outbox) = reader(&hub, 1, &[room], &mut labels);
        let mut expected = vec!["subscribed 7".to_string()];
        for i in 1..=1000u64 {
            let f = labels.frame(i.to_string());
            assert!(hub.deliver(room, Seq(i), f).is_none());
            expected.push(i.to_string());
        }
        assert_eq!(drain(&mut outbox, &labels), expected);
        assert!(!session.close.is_closed());
    }

    /// A removal and then a publish, both between the writer's park and its last look at the
    /// ring: the look goes only up to the epoch of the park, so the entry released after the
    /// removal is never handed out (the end marker, queued before it, is taken first).
    #[test]
    fn the_last_look_before_parking_stops_at_the_parks_epoch() {
        let hub = Arc::new(hub());
        let mut labels = Labels::default();
        let room = RoomId(5);
        let (session, mut outbox) = reader(&hub, 1, &[room], &mut labels);
        // Someone else stays, so that the room (and its ring) lives on.
        let (_other, _other_box) = reader(&hub, 2, &[room], &mut labels);
        assert_eq!(park(&mut outbox, &labels), ["subscribed 5", "?"]);
        let late = labels.frame("after the removal");
        let (h, s) = (hub.clone(), session.clone());
        let mut once = Some(late);
        outbox.0.park_hook = Some(Box::new(move || {
            if let Some(late) = once.take() {
                assert!(h.unsubscribe(&s, room));
                assert!(h.deliver(room, Seq(1), late).is_none());
            }
        }));
        // Woken (for nothing) so that it parks again, through the hook.
        session.queue.request_probe();
        assert_eq!(park(&mut outbox, &labels), Vec::<String>::new());
        assert!(outbox.0.first.is_none(), "the room's cursor ended");
        assert!(!session.close.is_closed());
    }

    /// A removal that finds the session's queue full, during shutdown (when the writer still
    /// writes its backlog): the end marker is queued past the capacity, so the writer's
    /// cursor ends there, and the entry released after the removal is never handed out.
    #[test]
    fn a_removal_from_a_full_queue_still_ends_the_cursor() {
        let hub = hub_with_queue(4);
        let mut labels = Labels::default();
        let room = RoomId(9);
        let (session, mut outbox) = reader(&hub, 1, &[room], &mut labels);
        let (_other, _other_box) = reader(&hub, 2, &[room], &mut labels);
        session.close.close(CloseReason::Shutdown);
        // Its reply, its cursor, user 2's presence, and this: the queue is full.
        assert!(session.push(labels.frame("backlog")));
        assert_eq!(session.queue.len(), 4);
        assert!(hub.unsubscribe(&session, room));
        assert_eq!(session.queue.len(), 5, "the end marker, past the capacity");
        assert!(
            hub.deliver(room, Seq(1), labels.frame("after the removal"))
                .is_none()
        );
        assert_eq!(
            drain(&mut outbox, &labels),
            ["subscribed 9", "?", "backlog"]
        );
        assert!(outbox.0.first.is_none(), "the room's cursor ended");
    }

    /// A writer that never reads, and a client that keeps leaving and rejoining a busy room:
    /// each end marker holds the entries it owes, and they count against a budget (twice the
    /// queue's capacity), so the session is closed as a slow consumer instead of holding
    /// ring after ring.
    #[test]
    fn entries_held_by_end_markers_count_against_the_queue() {
        let hub = hub_with_queue(16);
        let mut labels = Labels::default();
        let room = RoomId(4);
        let (session, _outbox) = reader(&hub, 1, &[room], &mut labels);
        let (_other, _other_box) = reader(&hub, 2, &[room], &mut labels);
        let mut seq = 0;
        let mut rounds = 0;
        while !session.close.is_closed() && rounds < 10 {
            rounds += 1;
            for _ in 0..10 {
                seq += 1;
                assert!(hub.deliver(room, Seq(seq), labels.frame("m")).is_none());
            }
            assert!(hub.unsubscribe(&session, room));
            assert!(hub.begin_subscribe(&session, room));
            let reply = labels.frame("again");
            let _ = hub.finish_subscribe(&session, room, Seq(seq), || reply);
        }
        assert_eq!(session.close.reason(), Some(CloseReason::SlowConsumer));
        // 10 entries held per marker against a budget of 2 × 16.
        assert!(rounds <= 4, "closed after {rounds} rounds");
    }

    /// A close whose reason is set but whose flag is not yet (another thread, preempted in
    /// between) when the session is removed: the end marker is queued all the same, so the
    /// entry released after the removal is never handed out.
    #[test]
    fn a_removal_during_a_close_still_ends_the_cursor() {
        let hub = hub();
        let mut labels = Labels::default();
        let room = RoomId(6);
        let (session, mut outbox) = reader(&hub, 1, &[room], &mut labels);
        let (_other, _other_box) = reader(&hub, 2, &[room], &mut labels);
        session.close.set_reason_only(CloseReason::Revoked);
        assert!(hub.unsubscribe(&session, room));
        assert!(
            hub.deliver(room, Seq(1), labels.frame("after the removal"))
                .is_none()
        );
        assert_eq!(drain(&mut outbox, &labels), ["subscribed 6", "?"]);
        assert!(outbox.0.first.is_none(), "the room's cursor ended");
    }

    /// A re-subscribe, then a removal, while the writer had not read the first
    /// subscription's entries, and the ring then dropped them: that is a lag (closed as a
    /// slow consumer), not a silent gap before the second `subscribed`.
    #[test]
    fn an_earlier_cursors_dropped_entries_are_a_lag_not_a_gap() {
        let hub = hub();
        let mut labels = Labels::default();
        let room = RoomId(8);
        let (session, mut outbox) = reader(&hub, 1, &[room], &mut labels);
        let (_other, mut other_box) = reader(&hub, 2, &[room], &mut labels);
        for i in 1..=10u64 {
            assert!(
                hub.deliver(room, Seq(i), labels.frame(i.to_string()))
                    .is_none()
            );
        }
        assert!(hub.begin_subscribe(&session, room));
        let again = labels.frame("again");
        let outcome = hub.finish_subscribe(&session, room, Seq(10), || again);
        assert!(matches!(outcome, FinishOutcome::Live { .. }), "{outcome:?}");
        assert!(hub.unsubscribe(&session, room));
        park(&mut other_box, &labels);
        // Everyone left had read up to 11 when it was released; the next append drops the rest.
        assert!(hub.deliver(room, Seq(11), labels.frame("11")).is_none());
        assert!(hub.deliver(room, Seq(12), labels.frame("12")).is_none());
        let got = drain(&mut outbox, &labels);
        assert_eq!(
            session.close.reason(),
            Some(CloseReason::SlowConsumer),
            "{got:?}"
        );
        assert!(!got.contains(&"again".to_string()), "{got:?}");
    }

    /// A session removed from a room while its round was unfinished, whose ring then dropped
    /// the entries it was still owed (every other reader had read them): it is not a slow
    /// consumer. It gets them from its end marker, in the order they happened — before a frame
    /// queued after them — and nothing released after its removal.
    #[test]
    fn owed_entries_trimmed_from_the_ring_come_from_the_end_marker_in_order() {
        let hub = hub();
        let mut labels = Labels::default();
        let room = RoomId(3);
        let (session, mut outbox) = reader(&hub, 1, &[room], &mut labels);
        let (_other, mut other_box) = reader(&hub, 2, &[room], &mut labels);
        // Its reply, then user 2's presence (a frame the hub made: "?").
        let mut expected = vec!["subscribed 3".to_string(), "?".to_string()];
        for i in 1..=300u64 {
            let f = labels.frame(i.to_string());
            assert!(hub.deliver(room, Seq(i), f).is_none());
            expected.push(i.to_string());
        }
        assert!(session.push(labels.frame("own")));
        expected.push("own".into());

        // One frame out: the round took the queue and stopped at `ROUND_MAX` staged.
        assert_eq!(
            outbox.try_recv().map(|f| labels.of(&f)).as_deref(),
            Some("subscribed 3")
        );
        assert!(outbox.0.unfinished());

        assert!(hub.unsubscribe(&session, room));
        // The other reader reads everything and parks; the entry after the next then trims
        // the ring (the trim is done at the following append).
        let other: Vec<String> = park(&mut other_box, &labels);
        assert_eq!(
            other.len(),
            302,
            "its reply, 300 entries, user 1's presence"
        );
        assert_eq!(other.last().map(String::as_str), Some("?"));
        assert!(hub.deliver(room, Seq(301), labels.frame("301")).is_none());
        assert!(hub.deliver(room, Seq(302), labels.frame("302")).is_none());
        let cursor = outbox.0.first.as_ref().expect("still reading the room");
        assert_eq!(cursor.ring.first(Seq(299)).err(), Some(Lagged), "trimmed");

        assert_eq!(drain(&mut outbox, &labels)[..], expected[1..]);
        assert!(!session.close.is_closed(), "not a slow consumer");
        assert!(outbox.0.first.is_none(), "the room's cursor ended");
    }
}
