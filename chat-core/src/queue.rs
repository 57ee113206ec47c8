//! The bounded outbound queue of one session.
//!
//! It carries a session's replies and events (presence and typing are pushed into thousands
//! of these at once) and the markers that open and end its reading of room rings; room
//! entries themselves are read from the rings (see the hub's module docs).
//!
//! Why not `tokio::sync::mpsc`: a bounded tokio channel spends several atomic
//! read-modify-writes per message on its semaphore and block list, and its receive side takes
//! the semaphore's waiter mutex to return the permit. Here a push is one uncontended mutex
//! round-trip, and the writer is woken only when it is parked; the writer takes everything
//! queued in one lock ([`Queue::take_all`], [`Queue::poll_take`]), and checks the dense
//! [`Slots`] pending bit before taking the lock at all. The queue holds `Arc`s, so a frame
//! shared by ten thousand queues is one allocation.
//!
//! The mutex is a `std::sync::Mutex`: every critical section is a few instructions and never
//! awaits. The writer parks on an [`AtomicWaker`], not a `tokio::sync::Notify`: a queue has
//! exactly one reader, and `Notify` keeps a waiter list under a mutex of its own, which cost a
//! lock on every park and every wake-up (`notify_locked` alone was about 1 % of chat-server's
//! CPU in the fan-out profile).

use crate::hub::{CloseReason, EndCursor, OpenCursor};
use crate::protocol::Outgoing;
use crate::session::Outbound;
use futures_util::task::AtomicWaker;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Context;

/// Why a push failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    /// The queue holds `capacity` items (or, for an end marker, which is queued anyway: more,
    /// or its end markers hold too many entries).
    Full,
    /// The receiving side is gone.
    Closed,
}

/// What a session queue carries: frames for the writer, and the markers that start and end
/// its reading of a room's ring (see the hub's module docs). A marker's place in the queue
/// is what orders a room's entries against the session's own frames.
#[derive(Debug)]
pub(crate) enum Item {
    /// A frame to write.
    Frame(Arc<Outgoing>),
    /// From here on, read this room's ring after a seq.
    Open(Arc<OpenCursor>),
    /// Read this room's ring up to a seq, then stop.
    End(Arc<EndCursor>),
}

/// How many items a queue holds inline, in the cache line of its mutex; more go to a
/// heap-allocated spill (see [`Inner`]). Room entries do not pass through here (they are read
/// from the room's ring), so a queue holds replies and events, rarely more than a couple.
const INLINE: usize = 1;

/// `repr(C, align(64))`: everything a push and a take touch (the mutex, the flags, the
/// capacity, up to [`INLINE`] items) shares one cache line; the waker, the slot handle, the
/// epoch and the closing hint sit on the next. (The park state itself is in [`Slots`].)
#[derive(Debug)]
#[repr(C, align(64))]
pub(crate) struct Queue {
    inner: Mutex<Inner>,
    /// The parked writer. It registers under the mutex and then sets `Inner::waiting`, and
    /// pushes (and the close, and probe requests) wake it only when `waiting` is set, checked
    /// under the same mutex: nothing is missed, and a busy queue costs no wake-ups.
    waker: AtomicWaker,
    /// Where the writer is in parking ([`RUNNING`], [`PARKING`], [`PARKED`]), readable
    /// without the mutex: a publisher releasing a room entry reads it for every subscriber
    /// and takes the mutex only for a parking or parked one. `PARKING` is set (with
    /// `Inner::waiting`) before the writer's last look at its rings and read after the
    /// entry's release, both `SeqCst`: either the writer sees the entry or the publisher
    /// sees it parking. `PARKED` is set only after that look found nothing, so a `PARKED`
    /// writer has read every ring it follows to the end (the hub trims rings on it).
    park_slot: Slot,
    /// The node's release epoch: each queued item is stamped with it (see the hub).
    epoch: Arc<AtomicU64>,
    /// `Inner::closing.is_some()`, readable without the mutex: the writer checks it before
    /// every frame it hands out, so a close overtakes frames already taken from the queue.
    closing_hint: AtomicBool,
}

/// The writer is running (or woken).
const RUNNING: u8 = 0;
/// The writer is registered and taking a last look at its rings.
const PARKING: u8 = 1;
/// The writer looked and found nothing: it is waiting, and has read everything.
const PARKED: u8 = 2;

// The point of the layout: if a field is added to `Inner`, this says so at compile time
// rather than in a benchmark.
const _: () = assert!(std::mem::size_of::<Mutex<Inner>>() <= 64);

/// A bounded FIFO in two parts: a ring of [`INLINE`] slots inside the struct, and a spill on
/// the heap for what does not fit. **Every item in the ring is older than every item in the
/// spill**: a push goes to the ring only while the spill is empty, and a pop takes from the
/// ring first.
#[derive(Debug)]
struct Inner {
    ring: [Option<(Item, u64)>; INLINE],
    /// Items queued behind a full ring. Boxed, so that an idle queue stays one line; `None`
    /// until the first backlog, and dropped again after a large one.
    #[allow(clippy::box_collection)]
    spill: Option<Box<VecDeque<(Item, u64)>>>,
    /// At most this many items, ring and spill together (the session queue limit, clamped
    /// to `u32`); only end markers are queued past it ([`Queue::push_end`]).
    capacity: u32,
    /// The ring's oldest slot, and how many slots are full.
    head: u8,
    len: u8,
    /// The spill holds at least one item.
    spilling: bool,
    closed: bool,
    /// The writer found the queue empty and is (about to be) parked on `waker`.
    waiting: bool,
    /// The connection's reader asked the writer for a keepalive probe
    /// ([`Queue::request_probe`]).
    probe: bool,
    /// The session is closing, and why ([`Queue::closing`]).
    closing: Option<CloseReason>,
    /// The slot's pending bit is set: something here wants the writer (items, a probe
    /// request, the close).
    flagged: bool,
    /// Ring entries held by the queued end markers (their `owed`): bounded too (twice the
    /// capacity, see [`Queue::push_end`]), so that what a session holds stays bounded however
    /// it subscribes and leaves.
    pinned: u32,
}

/// What [`crate::session::Outbox`] hands the pump's writer.
#[derive(Debug)]
pub(crate) enum Pumped {
    /// What [`crate::session::Outbox::recv`] would have returned.
    Out(Outbound),
    /// Send a keepalive probe.
    Probe,
}

/// What [`Queue::poll_take`] found.
#[derive(Debug)]
pub(crate) enum Taken {
    /// The session is closing (or the queue was closed and is empty: `Shutdown`).
    Close(CloseReason),
    /// The reader asked for a keepalive probe.
    Probe,
    /// Items were moved into the caller's buffer; the epoch when they were taken.
    Items(u64),
    /// Nothing: the writer is registered as parked (undo with [`Queue::unpark`]). With the
    /// epoch read under the lock after the park state was set: the writer's last look at its
    /// rings goes up to it, since an item queued later is stamped at least that, and an entry
    /// released later finds the writer parking and wakes it.
    Parked(u64),
}

impl Inner {
    /// Items queued, ring and spill.
    fn len(&self) -> usize {
        let spilled = match &self.spill {
            Some(spill) if self.spilling => spill.len(),
            _ => 0,
        };
        usize::from(self.len) + spilled
    }

    /// Queues an item behind the others, if there is room (`force`: in any case).
    // `INLINE` is 1 today (a stamped item is 24 bytes, and the line has room for one); the
    // ring arithmetic stays correct for any size.
    #[allow(clippy::modulo_one)]
    fn push_back(&mut self, item: (Item, u64), force: bool) -> Result<(), PushError> {
        if !force && self.len() >= self.capacity as usize {
            return Err(PushError::Full);
        }
        self.pinned = self.pinned.saturating_add(pinned_by(&item.0));
        if !self.spilling && usize::from(self.len) < INLINE {
            let slot = (usize::from(self.head) + usize::from(self.len)) % INLINE;
            self.ring[slot] = Some(item);
            self.len += 1;
            return Ok(());
        }
        self.spill.get_or_insert_default().push_back(item);
        self.spilling = true;
        Ok(())
    }

    /// The oldest item.
    fn pop_front(&mut self) -> Option<(Item, u64)> {
        let item = self.pop_front_inner();
        if let Some((item, _)) = &item {
            self.pinned = self.pinned.saturating_sub(pinned_by(item));
        }
        item
    }

    #[allow(clippy::modulo_one)]
    fn pop_front_inner(&mut self) -> Option<(Item, u64)> {
        if self.len > 0 {
            let item = self.ring[usize::from(self.head)].take();
            self.head = ((usize::from(self.head) + 1) % INLINE) as u8;
            self.len -= 1;
            return item;
        }
        if !self.spilling {
            return None;
        }
        let spill = self.spill.as_mut()?;
        let item = spill.pop_front();
        if spill.is_empty() {
            self.spilling = false;
            if spill.capacity() > 64 {
                // After a burst, give the memory back: idle sessions should stay small.
                self.spill = None;
            }
        }
        item
    }

    /// Drops every queued item.
    fn clear(&mut self) {
        self.ring = Default::default();
        self.len = 0;
        self.spill = None;
        self.spilling = false;
        self.pinned = 0;
    }
}

/// The ring entries an item holds on to (an end marker's `owed`).
fn pinned_by(item: &Item) -> u32 {
    match item {
        Item::End(end) => u32::try_from(end.owed.len()).unwrap_or(u32::MAX),
        _ => 0,
    }
}

impl Queue {
    /// A queue with a slot of its own (tests; the hub gives each session's queue one of its
    /// [`Slots`]).
    #[cfg(test)]
    pub(crate) fn new(capacity: usize) -> Arc<Queue> {
        Queue::with_slot(capacity, Slots::default().take(), Arc::default())
    }

    pub(crate) fn with_slot(capacity: usize, slot: Slot, epoch: Arc<AtomicU64>) -> Arc<Queue> {
        Arc::new(Queue {
            inner: Mutex::new(Inner {
                // No allocation until a backlog: an idle session costs only this struct.
                ring: Default::default(),
                spill: None,
                capacity: u32::try_from(capacity.max(1)).unwrap_or(u32::MAX),
                head: 0,
                len: 0,
                spilling: false,
                closed: false,
                waiting: false,
                probe: false,
                closing: None,
                flagged: false,
                pinned: 0,
            }),
            waker: AtomicWaker::new(),
            park_slot: slot,
            epoch,
            closing_hint: AtomicBool::new(false),
        })
    }

    pub(crate) fn push(&self, frame: Arc<Outgoing>) -> Result<(), PushError> {
        self.push_item(Item::Frame(frame))
    }

    pub(crate) fn push_item(&self, item: Item) -> Result<(), PushError> {
        self.push_stamped(item, false)
    }

    /// Queues an end marker even past the capacity: a cursor must never miss its end (it
    /// would read the room on). `Err(Full)` if the queue is now over its capacity, or its end
    /// markers hold more than twice that many ring entries (the marker is queued all the
    /// same): the caller closes the session.
    pub(crate) fn push_end(&self, item: Item) -> Result<(), PushError> {
        self.push_stamped(item, true)
    }

    fn push_stamped(&self, item: Item, force: bool) -> Result<(), PushError> {
        let (wake, pushed) = {
            let mut g = crate::hub::lock(&self.inner);
            if g.closed {
                return Err(PushError::Closed);
            }
            // The pending bit first, then the stamp: a writer that read the epoch and then
            // found the bit clear may send every entry up to that epoch, since a frame it
            // missed is stamped later (see `Outbox`).
            if !g.flagged {
                g.flagged = true;
                self.park_slot.set_pending(true);
            }
            let stamp = self.epoch.load(Ordering::SeqCst);
            let mut pushed = g.push_back((item, stamp), force);
            // Pinned entries have a budget of their own (twice the capacity): the marker's
            // `owed` starts at a position the writer reported, which trails it by up to a
            // batch and a round, so a reader well within the ring may owe most of it.
            if force
                && pushed.is_ok()
                && (g.len() > g.capacity as usize || g.pinned as usize > 2 * g.capacity as usize)
            {
                pushed = Err(PushError::Full);
            }
            self.refresh(&mut g);
            if pushed.is_err() && !force {
                return pushed;
            }
            (self.take_waiting(&mut g), pushed)
        };
        if wake {
            self.waker.wake();
        }
        pushed
    }

    /// Keeps the slot's pending bit equal to "the writer has something to take here", under
    /// the mutex: set with the first item (or a probe request, or the close), cleared when a
    /// take leaves nothing. A writer whose bit is clear skips the lock (see [`Slots`]).
    fn refresh(&self, g: &mut Inner) {
        let want = g.len > 0 || g.spilling || g.probe || g.closing.is_some() || g.closed;
        if want != g.flagged {
            g.flagged = want;
            self.park_slot.set_pending(want);
        }
    }

    /// Where this queue's slot is ([`SlotRef`]).
    pub(crate) fn slot(&self) -> SlotRef {
        self.park_slot.at.clone()
    }

    /// Clears the parked state under the mutex; whether the writer was parked.
    fn take_waiting(&self, g: &mut Inner) -> bool {
        let was = std::mem::take(&mut g.waiting);
        if was {
            self.park_slot.park().store(RUNNING, Ordering::SeqCst);
        }
        was
    }

    /// For a publisher that released a room entry: wakes the writer if it is parking or
    /// parked, and says whether it was parked (so had read everything released before). A
    /// running writer costs one load of this line and no lock.
    pub(crate) fn wake_if_parked(&self) -> bool {
        if self.park_slot.park().load(Ordering::SeqCst) == RUNNING {
            return false;
        }
        let was = self.park_slot.park().swap(RUNNING, Ordering::SeqCst);
        if was == RUNNING {
            return false;
        }
        let wake = std::mem::take(&mut crate::hub::lock(&self.inner).waiting);
        if wake {
            self.waker.wake();
        }
        was == PARKED
    }

    /// After [`Taken::Parked`] and a last look at the rings that found nothing: marks the
    /// writer parked. `false` if it was woken meanwhile (look again).
    pub(crate) fn settle(&self) -> bool {
        self.park_slot
            .park()
            .compare_exchange(PARKING, PARKED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// One look at the queue, under one lock: a close first, then a probe request (with
    /// `probes`), then every queued item (moved into `out`); with nothing, registers the
    /// writer as parked.
    pub(crate) fn poll_take(
        &self,
        cx: &mut Context<'_>,
        probes: bool,
        out: &mut VecDeque<(Item, u64)>,
    ) -> Taken {
        let mut g = crate::hub::lock(&self.inner);
        if let Some(reason) = g.closing {
            return Taken::Close(reason);
        }
        if probes && std::mem::take(&mut g.probe) {
            self.refresh(&mut g);
            return Taken::Probe;
        }
        if Self::take_all_locked(&mut g, out) {
            self.refresh(&mut g);
            return Taken::Items(self.epoch.load(Ordering::SeqCst));
        }
        if g.closed {
            return Taken::Close(CloseReason::Shutdown);
        }
        self.waker.register(cx.waker());
        g.waiting = true;
        self.park_slot.park().store(PARKING, Ordering::SeqCst);
        Taken::Parked(self.epoch.load(Ordering::SeqCst))
    }

    /// Undoes the parking of [`Queue::poll_take`]: the writer found more to do.
    pub(crate) fn unpark(&self) {
        let mut g = crate::hub::lock(&self.inner);
        self.take_waiting(&mut g);
    }

    /// Moves every queued item into `out`, with its stamp; returns the epoch then (every
    /// item queued later is stamped at least that).
    pub(crate) fn take_all(&self, out: &mut VecDeque<(Item, u64)>) -> u64 {
        let mut g = crate::hub::lock(&self.inner);
        Self::take_all_locked(&mut g, out);
        self.refresh(&mut g);
        self.epoch.load(Ordering::SeqCst)
    }

    /// The node's release epoch (see the hub's module docs).
    pub(crate) fn epoch(&self) -> Arc<AtomicU64> {
        self.epoch.clone()
    }

    fn take_all_locked(g: &mut Inner, out: &mut VecDeque<(Item, u64)>) -> bool {
        let before = out.len();
        while let Some(item) = g.pop_front() {
            out.push_back(item);
        }
        out.len() > before
    }

    /// Whether the session is closing (no lock).
    pub(crate) fn is_closing(&self) -> bool {
        self.closing_hint.load(Ordering::Acquire)
    }

    /// Asks the writer for a keepalive probe, waking it if it is parked. Requests made before
    /// the writer gets to it count as one. Ignored once the queue is closed.
    pub(crate) fn request_probe(&self) {
        let wake = {
            let mut g = crate::hub::lock(&self.inner);
            if g.closed {
                return;
            }
            g.probe = true;
            self.refresh(&mut g);
            self.take_waiting(&mut g)
        };
        if wake {
            self.waker.wake();
        }
    }

    /// Records that the session is closing (the first reason wins) and wakes the writer.
    /// Called by [`crate::hub::CloseSignal::close`] only.
    pub(crate) fn closing(&self, reason: CloseReason) {
        {
            let mut g = crate::hub::lock(&self.inner);
            g.closing.get_or_insert(reason);
            self.refresh(&mut g);
            self.take_waiting(&mut g);
        }
        self.closing_hint.store(true, Ordering::Release);
        self.waker.wake();
    }

    pub(crate) fn len(&self) -> usize {
        crate::hub::lock(&self.inner).len()
    }

    /// Whether the queue was closed (its writer is gone).
    pub(crate) fn is_closed(&self) -> bool {
        crate::hub::lock(&self.inner).closed
    }

    /// Refuses further pushes and drops what is queued. Wakes a waiting writer.
    pub(crate) fn close(&self) {
        {
            let mut g = crate::hub::lock(&self.inner);
            g.closed = true;
            g.clear();
            self.refresh(&mut g);
            self.take_waiting(&mut g);
        }
        self.waker.wake();
    }
}

/// Sessions' slots in dense shared arrays: a pending bit and a park state per session.
///
/// Why: with thousands of sessions, anything read per delivery from each session's own
/// allocation is a cache miss per delivery (see "fan-out" in docs/BENCHMARKS.md). A writer
/// checks its pending bit before taking its queue's lock, and a publisher reads each
/// subscriber's park state; packed here, 10 000 sessions' bits are 1.25 KB and their park
/// states 10 KB, which stay in cache. Chunks of [`CHUNK`] slots are allocated as sessions
/// come and kept; a freed slot is reused.
#[derive(Debug, Clone, Default)]
pub(crate) struct Slots {
    inner: Arc<Mutex<SlotsInner>>,
}

#[derive(Debug, Default)]
struct SlotsInner {
    chunks: Vec<Arc<SlotChunk>>,
    free: Vec<usize>,
}

/// Slots per chunk.
const CHUNK: usize = 4096;

#[derive(Debug)]
struct SlotChunk {
    pending: [AtomicU64; CHUNK / 64],
    park: [AtomicU8; CHUNK],
}

/// One session's slot; returned to the pool when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    at: SlotRef,
    pool: Arc<Mutex<SlotsInner>>,
    global: usize,
}

/// Where a slot is, for those who read it on the hot path without going through the queue
/// (whose own cache line would be the miss the slot exists to avoid): the room's subscriber
/// entry, the session's outbox.
#[derive(Debug, Clone)]
pub(crate) struct SlotRef {
    chunk: Arc<SlotChunk>,
    index: usize,
}

impl SlotRef {
    /// Whether the writer is parking or parked (a publisher must wake it).
    pub(crate) fn may_be_parked(&self) -> bool {
        self.chunk.park[self.index].load(Ordering::SeqCst) != RUNNING
    }

    /// Whether the queue has something for the writer (kept by `Queue::refresh`).
    pub(crate) fn pending(&self) -> bool {
        self.chunk.pending[self.index / 64].load(Ordering::SeqCst) & (1 << (self.index % 64)) != 0
    }
}

impl Slots {
    /// A slot, cleared.
    pub(crate) fn take(&self) -> Slot {
        let mut g = crate::hub::lock(&self.inner);
        let global = match g.free.pop() {
            Some(i) => i,
            None => {
                let i = g.chunks.len() * CHUNK;
                g.chunks.push(Arc::new(SlotChunk {
                    pending: std::array::from_fn(|_| AtomicU64::new(0)),
                    park: std::array::from_fn(|_| AtomicU8::new(RUNNING)),
                }));
                g.free.extend((i + 1..i + CHUNK).rev());
                i
            }
        };
        let slot = Slot {
            at: SlotRef {
                chunk: g.chunks[global / CHUNK].clone(),
                index: global % CHUNK,
            },
            pool: self.inner.clone(),
            global,
        };
        slot.set_pending(false);
        slot.park().store(RUNNING, Ordering::SeqCst);
        slot
    }
}

impl Slot {
    fn park(&self) -> &AtomicU8 {
        &self.at.chunk.park[self.at.index]
    }

    fn word(&self) -> (&AtomicU64, u64) {
        (
            &self.at.chunk.pending[self.at.index / 64],
            1 << (self.at.index % 64),
        )
    }

    fn set_pending(&self, on: bool) {
        let (word, bit) = self.word();
        if on {
            word.fetch_or(bit, Ordering::SeqCst);
        } else {
            word.fetch_and(!bit, Ordering::SeqCst);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        crate::hub::lock(&self.pool).free.push(self.global);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::CloseSignal;
    use crate::protocol::ServerFrame;
    use proptest::prelude::*;
    use std::task::Poll;

    /// What a writer reading only the queue gets next, parking while there is nothing:
    /// [`crate::Outbox`]'s use of [`Queue::poll_take`], without the rings.
    async fn next(q: &Queue, probes: bool) -> (Taken, VecDeque<(Item, u64)>) {
        std::future::poll_fn(|cx| {
            let mut out = VecDeque::new();
            match q.poll_take(cx, probes, &mut out) {
                Taken::Parked(_) => Poll::Pending,
                t => Poll::Ready((t, out)),
            }
        })
        .await
    }

    fn frame(item: &(Item, u64)) -> &Arc<Outgoing> {
        match &item.0 {
            Item::Frame(f) => f,
            other => panic!("not a frame: {other:?}"),
        }
    }

    #[test]
    fn bounded_fifo() {
        let q = Queue::new(2);
        let f = Outgoing::event(ServerFrame::Pong);
        assert_eq!(q.push(f.clone()), Ok(()));
        assert_eq!(q.push(f.clone()), Ok(()));
        assert_eq!(q.push(f.clone()), Err(PushError::Full));
        assert_eq!(q.len(), 2);
        let mut out = VecDeque::new();
        q.take_all(&mut out);
        assert_eq!(out.len(), 2);
        q.take_all(&mut out);
        assert_eq!(out.len(), 2, "nothing more");
        q.close();
        assert_eq!(q.push(f), Err(PushError::Closed));
    }

    /// A backlog past the inline ring keeps its order through ring and spill (also when
    /// pushes land while the ring drains), and a large spill is freed once empty.
    #[test]
    fn a_backlog_spills_in_order_and_is_given_back() {
        let q = Queue::new(200);
        let made: Vec<_> = (0..150)
            .map(|_| Outgoing::event(ServerFrame::Pong))
            .collect();
        let index = |i: &(Item, u64)| made.iter().position(|m| Arc::ptr_eq(m, frame(i))).unwrap();
        for f in &made[..100] {
            q.push(f.clone()).unwrap();
        }
        assert!(crate::hub::lock(&q.inner).spilling);
        let mut got = Vec::new();
        // Pops free ring slots while the spill is not empty: new pushes must queue behind
        // the spill, not jump into the ring.
        {
            let mut g = crate::hub::lock(&q.inner);
            got.push(index(&g.pop_front().unwrap()));
            got.push(index(&g.pop_front().unwrap()));
        }
        for f in &made[100..150] {
            q.push(f.clone()).unwrap();
        }
        assert_eq!(q.len(), 148);
        let mut out = VecDeque::new();
        q.take_all(&mut out);
        got.extend(out.iter().map(index));
        assert_eq!(got, (0..150).collect::<Vec<_>>());
        let g = crate::hub::lock(&q.inner);
        assert!(!g.spilling);
        assert!(
            g.spill.is_none(),
            "a spill of over 64 items is freed once empty"
        );
        drop(g);
        // And the ring is used again.
        q.push(made[0].clone()).unwrap();
        assert!(!crate::hub::lock(&q.inner).spilling);
        assert_eq!(q.len(), 1);
    }

    #[tokio::test]
    async fn a_close_wakes_a_parked_writer_and_beats_queued_frames() {
        let q = Queue::new(4);
        let close = Arc::new(CloseSignal::new(q.clone()));
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { next(&q2, false).await.0 });
        tokio::task::yield_now().await;
        close.close(CloseReason::Revoked);
        assert!(matches!(
            waiter.await.unwrap(),
            Taken::Close(CloseReason::Revoked)
        ));

        let q = Queue::new(4);
        let close = CloseSignal::new(q.clone());
        q.push(Outgoing::event(ServerFrame::Pong)).unwrap();
        close.close(CloseReason::SlowConsumer);
        close.close(CloseReason::Shutdown);
        assert!(q.is_closing());
        assert!(
            matches!(
                next(&q, false).await.0,
                Taken::Close(CloseReason::SlowConsumer)
            ),
            "the close comes first, with the first reason given"
        );
        assert_eq!(close.closed().await, CloseReason::SlowConsumer);
    }

    /// One operation of the model test.
    #[derive(Debug, Clone)]
    enum Op {
        Push,
        Pop,
        TakeAll,
        Close,
    }

    proptest::proptest! {
        /// Pushes up to the capacity, pops, takes of everything and a close behave as one
        /// bounded FIFO: compared with a `VecDeque` model after every operation. Capacities
        /// at and above the inline ring's, and large enough for a spill that is given
        /// back after a backlog.
        #[test]
        fn behaves_as_a_bounded_fifo(
            capacity in prop_oneof![1usize..12, 60usize..120],
            ops in proptest::collection::vec(
                prop_oneof![
                    4 => Just(Op::Push),
                    3 => Just(Op::Pop),
                    1 => Just(Op::TakeAll),
                    1 => Just(Op::Close),
                ],
                0..400,
            ),
        ) {
            let q = Queue::new(capacity);
            let mut model = VecDeque::new();
            let mut closed = false;
            let mut next = 0u64;
            // Frames are told apart by their pointer.
            let mut made = Vec::new();
            let index = |made: &Vec<Arc<Outgoing>>, i: &(Item, u64)| {
                made.iter().position(|m| Arc::ptr_eq(m, frame(i))).unwrap() as u64
            };
            for op in ops {
                match op {
                    Op::Push => {
                        let f = Outgoing::event(ServerFrame::Pong);
                        let expected = if closed {
                            Err(PushError::Closed)
                        } else if model.len() >= capacity {
                            Err(PushError::Full)
                        } else {
                            model.push_back(next);
                            Ok(())
                        };
                        prop_assert_eq!(q.push(f.clone()), expected);
                        made.push(f);
                        next += 1;
                    }
                    Op::Pop => {
                        let got = crate::hub::lock(&q.inner).pop_front();
                        let want = model.pop_front();
                        prop_assert_eq!(got.map(|i| index(&made, &i)), want);
                    }
                    Op::TakeAll => {
                        let mut out = VecDeque::new();
                        q.take_all(&mut out);
                        let want: Vec<_> = model.drain(..).collect();
                        let got: Vec<_> = out.iter().map(|i| index(&made, i)).collect();
                        prop_assert_eq!(got, want);
                    }
                    Op::Close => {
                        q.close();
                        closed = true;
                        model.clear();
                    }
                }
                prop_assert_eq!(q.len(), model.len());
            }
        }
    }

    #[tokio::test]
    async fn probe_requests_go_first_coalesce_and_are_only_for_the_pump() {
        let q = Queue::new(4);
        let close = Arc::new(CloseSignal::new(q.clone()));
        let f = Outgoing::event(ServerFrame::Pong);
        q.push(f.clone()).unwrap();
        q.request_probe();
        q.request_probe();
        assert!(matches!(next(&q, true).await.0, Taken::Probe));
        let (t, items) = next(&q, true).await;
        assert!(
            matches!(t, Taken::Items(_)) && items.len() == 1,
            "two requests made before the writer got to them are one probe"
        );

        // Without `probes` (what `recv` asks for) a request is left alone.
        q.request_probe();
        q.push(f.clone()).unwrap();
        assert!(matches!(next(&q, false).await.0, Taken::Items(_)));
        assert!(matches!(next(&q, true).await.0, Taken::Probe));

        // A parked pump writer is woken by a request.
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { next(&q2, true).await.0 });
        tokio::task::yield_now().await;
        q.request_probe();
        assert!(matches!(waiter.await.unwrap(), Taken::Probe));

        // The close goes before a request, and a closed queue takes none.
        q.request_probe();
        close.close(CloseReason::Revoked);
        assert!(matches!(
            next(&q, true).await.0,
            Taken::Close(CloseReason::Revoked)
        ));
        let q = Queue::new(4);
        q.close();
        q.request_probe();
        assert!(matches!(
            next(&q, true).await.0,
            Taken::Close(CloseReason::Shutdown)
        ));
    }

    /// Pushes and closes from another thread while the writer parks wake it: every wait ends
    /// (a lost wake-up would hang it until the 10 s failure bound). Both are recorded under
    /// the mutex the writer registers under, which is what leaves no window for a lost one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wake_ups_racing_the_park_are_never_lost() {
        for round in 0..3000 {
            let q = Queue::new(4);
            let close = Arc::new(CloseSignal::new(q.clone()));
            let q2 = q.clone();
            // Parks until woken once, then reports what the queue holds.
            let waiter = tokio::spawn(async move {
                let mut parked = false;
                std::future::poll_fn(|cx| {
                    loop {
                        let mut out = VecDeque::new();
                        match q2.poll_take(cx, false, &mut out) {
                            // As `Outbox` does after a last look at its (here: no) rings:
                            // settle, or look again if woken meanwhile.
                            Taken::Parked(_) if !parked => {
                                if q2.settle() {
                                    parked = true;
                                    return Poll::Pending;
                                }
                            }
                            t => return Poll::Ready(t),
                        }
                    }
                })
                .await
            });
            let (q3, c3) = (q.clone(), close.clone());
            let other = std::thread::spawn(move || match round % 3 {
                0 => q3.push(Outgoing::event(ServerFrame::Pong)).unwrap(),
                1 => c3.close(CloseReason::Revoked),
                // What a publisher does after releasing a room entry: wake a parked writer.
                _ => {
                    while q3.park_slot.park().load(Ordering::SeqCst) == RUNNING {
                        std::thread::yield_now();
                    }
                    q3.wake_if_parked();
                }
            });
            let out = tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
                .await
                .expect("the waiting writer was woken")
                .unwrap();
            other.join().unwrap();
            match round % 3 {
                0 => assert!(matches!(out, Taken::Items(_)), "{out:?}"),
                1 => assert!(matches!(out, Taken::Close(CloseReason::Revoked)), "{out:?}"),
                // Woken with nothing queued: it would look at its rings, and park again.
                _ => assert!(matches!(out, Taken::Parked(_)), "{out:?}"),
            }
        }
    }

    /// A session's slot is returned to the pool when its queue goes, and handed out again
    /// cleared: a new session never starts with the old one's pending bit or park state.
    /// Slots of different sessions share a word of pending bits without disturbing each
    /// other.
    #[test]
    fn slots_are_reused_cleared_and_independent() {
        let slots = Slots::default();
        let a = slots.take();
        let b = slots.take();
        a.set_pending(true);
        a.park().store(PARKED, Ordering::SeqCst);
        assert!(a.at.pending() && a.at.may_be_parked());
        assert!(
            !b.at.pending() && !b.at.may_be_parked(),
            "a neighbour's bit is its own"
        );
        b.set_pending(true);
        a.set_pending(false);
        assert!(!a.at.pending() && b.at.pending());
        a.set_pending(true);
        let index = a.global;
        drop(a);
        let again = slots.take();
        assert_eq!(again.global, index, "the freed slot is reused first");
        assert!(
            !again.at.pending() && !again.at.may_be_parked(),
            "and cleared"
        );
        assert!(b.at.pending());
    }

    /// An end marker is queued past the capacity (and says so), and the ring entries it
    /// holds count against a budget of twice the capacity, given back when it is taken.
    #[test]
    fn end_markers_go_past_the_capacity_and_their_entries_are_budgeted() {
        let q = Queue::new(2);
        let end = |owed: usize| {
            Item::End(Arc::new(EndCursor {
                room: crate::ids::RoomId(1),
                from: crate::ids::Seq(1),
                last: crate::ids::Seq(owed as u64),
                owed: (1..=owed as u64)
                    .map(|s| (crate::ids::Seq(s), s, Outgoing::event(ServerFrame::Pong)))
                    .collect(),
                evicted: crate::ids::Seq(0),
            }))
        };
        assert_eq!(q.push_end(end(3)), Ok(()), "3 owed entries: within 2 × 2");
        assert_eq!(
            q.push_end(end(2)),
            Err(PushError::Full),
            "5 owed: over the budget"
        );
        assert_eq!(q.len(), 2, "queued all the same");
        assert_eq!(
            q.push(Outgoing::event(ServerFrame::Pong)),
            Err(PushError::Full),
            "a frame is refused at the capacity"
        );
        assert_eq!(
            q.push_end(end(0)),
            Err(PushError::Full),
            "3 items: over the capacity"
        );
        assert_eq!(q.len(), 3);
        let mut out = VecDeque::new();
        q.take_all(&mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(
            crate::hub::lock(&q.inner).pinned,
            0,
            "given back when taken"
        );
        assert_eq!(q.push_end(end(4)), Ok(()));
        q.close();
        assert_eq!(q.push_end(end(0)), Err(PushError::Closed));
    }

    #[tokio::test]
    async fn a_push_wakes_a_waiting_receiver() {
        let q = Queue::new(4);
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { next(&q2, false).await });
        tokio::task::yield_now().await;
        q.push(Outgoing::event(ServerFrame::Pong)).unwrap();
        let (t, items) = waiter.await.unwrap();
        assert!(matches!(t, Taken::Items(_)) && items.len() == 1);
        let q3 = q.clone();
        let waiter = tokio::spawn(async move { next(&q3, false).await.0 });
        tokio::task::yield_now().await;
        q.close();
        assert!(
            matches!(waiter.await.unwrap(), Taken::Close(CloseReason::Shutdown)),
            "closing the queue ends a waiting recv"
        );
    }
}
