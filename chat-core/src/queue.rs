//! The bounded outbound queue of one session.
//!
//! Why not `tokio::sync::mpsc`: fan-out pushes one frame into thousands of these queues per
//! message, so the per-push cost is the hub's cost. A bounded tokio channel spends several
//! atomic read-modify-writes per message on its semaphore and block list, and its receive
//! side takes the semaphore's waiter mutex to return the permit. Here a push is one
//! uncontended mutex round-trip around a `VecDeque` push, and the writer is woken only when the
//! queue goes from empty to non-empty; the writer can take everything queued in one lock
//! ([`Queue::drain_into`]). The queue holds `Arc`s, so a frame shared by ten thousand queues
//! is one allocation.
//!
//! The mutex is a `std::sync::Mutex`: every critical section is a few instructions and never
//! awaits. The writer parks on an [`AtomicWaker`], not a `tokio::sync::Notify`: a queue has
//! exactly one reader, and `Notify` keeps a waiter list under a mutex of its own, which cost a
//! lock on every park and every wake-up (`notify_locked` alone was about 1 % of chat-server's
//! CPU in the fan-out profile).

use crate::hub::CloseReason;
use crate::protocol::Outgoing;
use crate::session::Outbound;
use futures_util::task::AtomicWaker;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::Poll;

/// Why a push failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    /// The queue holds `capacity` frames.
    Full,
    /// The receiving side is gone.
    Closed,
}

/// How many frames a queue holds inline, in the cache line of its mutex. A fan-out push
/// then touches one line of the queue instead of two (the mutex's, and a heap buffer's), and
/// the writer's pop the same one; more than this many queued frames go to a heap-allocated
/// spill (see [`Inner`]). Four is what fits in the line next to the mutex and the flags.
const INLINE: usize = 4;

/// `repr(C, align(64))`: everything a push and a pop touch (the mutex, the flags, the
/// capacity, up to [`INLINE`] frames) shares one cache line; the waker, touched only to wake
/// a parked writer, sits on the next. With thousands of queues per fan-out, each line a push
/// touches is a cache miss (see `fanout` in docs/BENCHMARKS.md).
#[derive(Debug)]
#[repr(C, align(64))]
pub(crate) struct Queue {
    inner: Mutex<Inner>,
    /// The parked writer. It registers under the mutex and then sets `Inner::waiting`, and
    /// pushes (and the close, and probe requests) wake it only when `waiting` is set, checked
    /// under the same mutex: nothing is missed, and a busy queue costs no wake-ups.
    waker: AtomicWaker,
}

// The point of the layout: if a field is added to `Inner`, this says so at compile time
// rather than in a benchmark.
const _: () = assert!(std::mem::size_of::<Mutex<Inner>>() <= 64);

/// A bounded FIFO in two parts: a ring of [`INLINE`] slots inside the struct, and a spill on
/// the heap for what does not fit. **Every frame in the ring is older than every frame in the
/// spill**: a push goes to the ring only while the spill is empty, and a pop takes from the
/// ring first. So the common case (a writer that keeps up, a handful of frames queued) never
/// leaves the ring, and a backlog costs what a `VecDeque` costs.
#[derive(Debug)]
struct Inner {
    ring: [Option<Arc<Outgoing>>; INLINE],
    /// Frames queued behind a full ring. Boxed, so that an idle queue stays one line; `None`
    /// until the first backlog, and dropped again after a large one. (A `VecDeque`'s own
    /// 32-byte header in place would leave no room for the ring in the line.)
    #[allow(clippy::box_collection)]
    spill: Option<Box<VecDeque<Arc<Outgoing>>>>,
    /// At most this many frames, ring and spill together (the session queue limit, clamped
    /// to `u32`).
    capacity: u32,
    /// The ring's oldest slot, and how many slots are full.
    head: u8,
    len: u8,
    /// The spill holds at least one frame; kept here so that the push and the pop can tell
    /// without touching the spill's lines.
    spilling: bool,
    closed: bool,
    /// The writer found the queue empty and is (about to be) parked on `waker`.
    waiting: bool,
    /// The connection's reader asked the writer for a keepalive probe
    /// ([`Queue::request_probe`]).
    probe: bool,
    /// The session is closing, and why ([`Queue::closing`]): a copy of the session's
    /// [`crate::hub::CloseSignal`], kept here because the writer looks at it on every
    /// wake-up, when the queue's line is in its cache and the signal's is not (that check was
    /// 2.5 % of chat-server in the fan-out profile).
    closing: Option<CloseReason>,
}

/// What [`Queue::recv_or_probe`] hands the pump's writer.
#[derive(Debug)]
pub(crate) enum Pumped {
    /// What [`Queue::recv`] would have returned.
    Out(Outbound),
    /// Send a keepalive probe.
    Probe,
}

impl Inner {
    /// Frames queued, ring and spill.
    fn len(&self) -> usize {
        let spilled = match &self.spill {
            Some(spill) if self.spilling => spill.len(),
            _ => 0,
        };
        usize::from(self.len) + spilled
    }

    /// Queues a frame behind the others, if there is room.
    fn push_back(&mut self, frame: Arc<Outgoing>) -> Result<(), PushError> {
        if !self.spilling && usize::from(self.len) < INLINE {
            if u32::from(self.len) >= self.capacity {
                return Err(PushError::Full);
            }
            let slot = (usize::from(self.head) + usize::from(self.len)) % INLINE;
            self.ring[slot] = Some(frame);
            self.len += 1;
            return Ok(());
        }
        if self.len() >= self.capacity as usize {
            return Err(PushError::Full);
        }
        self.spill.get_or_insert_default().push_back(frame);
        self.spilling = true;
        Ok(())
    }

    /// The oldest frame.
    fn pop_front(&mut self) -> Option<Arc<Outgoing>> {
        if self.len > 0 {
            let frame = self.ring[usize::from(self.head)].take();
            self.head = ((usize::from(self.head) + 1) % INLINE) as u8;
            self.len -= 1;
            return frame;
        }
        if !self.spilling {
            return None;
        }
        let spill = self.spill.as_mut()?;
        let frame = spill.pop_front();
        if spill.is_empty() {
            self.spilling = false;
            if spill.capacity() > 64 {
                // After a burst, give the memory back: idle sessions should stay small.
                self.spill = None;
            }
        }
        frame
    }

    /// Drops every queued frame.
    fn clear(&mut self) {
        self.ring = Default::default();
        self.len = 0;
        self.spill = None;
        self.spilling = false;
    }

    /// The next frame, or the end of a closed queue.
    fn next(&mut self) -> Option<Outbound> {
        match self.pop_front() {
            Some(f) => Some(Outbound::Frame(f)),
            None if self.closed => Some(Outbound::Close(CloseReason::Shutdown)),
            None => None,
        }
    }
}

impl Queue {
    pub(crate) fn new(capacity: usize) -> Arc<Queue> {
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
            }),
            waker: AtomicWaker::new(),
        })
    }

    pub(crate) fn push(&self, frame: Arc<Outgoing>) -> Result<(), PushError> {
        let wake = {
            let mut g = crate::hub::lock(&self.inner);
            if g.closed {
                return Err(PushError::Closed);
            }
            g.push_back(frame)?;
            std::mem::take(&mut g.waiting)
        };
        if wake {
            self.waker.wake();
        }
        Ok(())
    }

    /// The next frame, waiting for one — unless the session is closing: the close is looked
    /// at before the frames, so it takes priority over them (a slow consumer is cut off
    /// without first writing its backlog). [`crate::hub::CloseSignal::close`] tells this
    /// queue and wakes it, so one wait covers both frames and the close.
    pub(crate) async fn recv(&self) -> Outbound {
        loop {
            // Without `probes`, `wait` leaves probe requests alone and never returns one.
            if let Pumped::Out(out) = self.wait(false).await {
                return out;
            }
        }
    }

    /// [`Queue::recv`] for the pump's writer, which also learns here when its reader wants a
    /// keepalive probe sent: one wait, on one queue, for frames, the close and probes, with no
    /// timer of the writer's own to poll on every wake-up. A probe request goes before queued
    /// frames; the close before both.
    pub(crate) async fn recv_or_probe(&self) -> Pumped {
        self.wait(true).await
    }

    async fn wait(&self, probes: bool) -> Pumped {
        std::future::poll_fn(|cx| {
            let mut g = crate::hub::lock(&self.inner);
            if let Some(reason) = g.closing {
                return Poll::Ready(Pumped::Out(Outbound::Close(reason)));
            }
            if probes && std::mem::take(&mut g.probe) {
                return Poll::Ready(Pumped::Probe);
            }
            if let Some(out) = g.next() {
                return Poll::Ready(Pumped::Out(out));
            }
            self.waker.register(cx.waker());
            g.waiting = true;
            Poll::Pending
        })
        .await
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
            std::mem::take(&mut g.waiting)
        };
        if wake {
            self.waker.wake();
        }
    }

    /// Records that the session is closing (the first reason wins) and wakes the writer.
    /// Called by [`crate::hub::CloseSignal::close`] only.
    pub(crate) fn closing(&self, reason: CloseReason) {
        crate::hub::lock(&self.inner).closing.get_or_insert(reason);
        self.waker.wake();
    }

    pub(crate) fn try_recv(&self) -> Option<Arc<Outgoing>> {
        crate::hub::lock(&self.inner).pop_front()
    }

    /// Moves up to `max` queued frames into `out` under one lock; returns how many.
    pub(crate) fn drain_into(&self, out: &mut Vec<Arc<Outgoing>>, max: usize) -> usize {
        let mut g = crate::hub::lock(&self.inner);
        let before = out.len();
        out.extend(std::iter::from_fn(|| g.pop_front()).take(max));
        out.len() - before
    }

    pub(crate) fn len(&self) -> usize {
        crate::hub::lock(&self.inner).len()
    }

    /// Refuses further pushes and drops what is queued. Wakes a waiting writer.
    pub(crate) fn close(&self) {
        {
            let mut g = crate::hub::lock(&self.inner);
            g.closed = true;
            g.clear();
        }
        self.waker.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::CloseSignal;
    use crate::protocol::ServerFrame;
    use proptest::prelude::*;

    #[test]
    fn bounded_fifo() {
        let q = Queue::new(2);
        let f = Outgoing::event(ServerFrame::Pong);
        assert_eq!(q.push(f.clone()), Ok(()));
        assert_eq!(q.push(f.clone()), Ok(()));
        assert_eq!(q.push(f.clone()), Err(PushError::Full));
        assert_eq!(q.len(), 2);
        let mut out = Vec::new();
        assert_eq!(q.drain_into(&mut out, 10), 2);
        assert!(q.try_recv().is_none());
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
        let index = |f: &Arc<Outgoing>| made.iter().position(|m| Arc::ptr_eq(m, f)).unwrap();
        for f in &made[..100] {
            q.push(f.clone()).unwrap();
        }
        assert!(crate::hub::lock(&q.inner).spilling);
        let mut got = Vec::new();
        // Two pops free ring slots while the spill is not empty: new pushes must queue
        // behind the spill, not jump into the ring.
        got.push(index(&q.try_recv().unwrap()));
        got.push(index(&q.try_recv().unwrap()));
        for f in &made[100..150] {
            q.push(f.clone()).unwrap();
        }
        assert_eq!(q.len(), 148);
        let mut out = Vec::new();
        while q.drain_into(&mut out, 7) > 0 {}
        got.extend(out.iter().map(index));
        assert_eq!(got, (0..150).collect::<Vec<_>>());
        let g = crate::hub::lock(&q.inner);
        assert!(!g.spilling);
        assert!(
            g.spill.is_none(),
            "a spill of over 64 frames is freed once empty"
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
        let waiter = tokio::spawn(async move { q2.recv().await });
        tokio::task::yield_now().await;
        close.close(CloseReason::Revoked);
        assert!(matches!(
            waiter.await.unwrap(),
            Outbound::Close(CloseReason::Revoked)
        ));

        let q = Queue::new(4);
        let close = CloseSignal::new(q.clone());
        q.push(Outgoing::event(ServerFrame::Pong)).unwrap();
        close.close(CloseReason::SlowConsumer);
        close.close(CloseReason::Shutdown);
        assert!(
            matches!(q.recv().await, Outbound::Close(CloseReason::SlowConsumer)),
            "the close comes first, with the first reason given"
        );
        assert_eq!(close.closed().await, CloseReason::SlowConsumer);
    }

    /// One operation of the model test.
    #[derive(Debug, Clone)]
    enum Op {
        Push,
        Pop,
        Drain(usize),
        Close,
    }

    proptest::proptest! {
        /// Pushes up to the capacity, pops, batched drains and a close behave as one
        /// bounded FIFO: compared with a `VecDeque` model after every operation. Capacities
        /// below, at and above the inline ring's, and large enough for a spill that is given
        /// back after a backlog.
        #[test]
        fn behaves_as_a_bounded_fifo(
            capacity in prop_oneof![1usize..12, 60usize..120],
            ops in proptest::collection::vec(
                prop_oneof![
                    4 => Just(Op::Push),
                    3 => Just(Op::Pop),
                    1 => (0usize..8).prop_map(Op::Drain),
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
                        let got = q.try_recv();
                        let want = model.pop_front();
                        prop_assert_eq!(
                            got.map(|f| made.iter().position(|m| Arc::ptr_eq(m, &f))),
                            want.map(|i| Some(i as usize))
                        );
                    }
                    Op::Drain(max) => {
                        let mut out = Vec::new();
                        let n = q.drain_into(&mut out, max);
                        prop_assert_eq!(n, out.len());
                        let want: Vec<_> = (0..n).filter_map(|_| model.pop_front()).collect();
                        let got: Vec<_> = out
                            .iter()
                            .map(|f| made.iter().position(|m| Arc::ptr_eq(m, f)).unwrap() as u64)
                            .collect();
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
        assert!(matches!(q.recv_or_probe().await, Pumped::Probe));
        assert!(
            matches!(q.recv_or_probe().await, Pumped::Out(Outbound::Frame(_))),
            "two requests made before the writer got to them are one probe"
        );

        // `recv` (what embedders call) leaves a request alone.
        q.request_probe();
        q.push(f.clone()).unwrap();
        assert!(matches!(q.recv().await, Outbound::Frame(_)));
        assert!(matches!(q.recv_or_probe().await, Pumped::Probe));

        // A parked pump writer is woken by a request.
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.recv_or_probe().await });
        tokio::task::yield_now().await;
        q.request_probe();
        assert!(matches!(waiter.await.unwrap(), Pumped::Probe));

        // The close goes before a request, and a closed queue takes none.
        q.request_probe();
        close.close(CloseReason::Revoked);
        assert!(matches!(
            q.recv_or_probe().await,
            Pumped::Out(Outbound::Close(CloseReason::Revoked))
        ));
        let q = Queue::new(4);
        q.close();
        q.request_probe();
        assert!(matches!(
            q.recv_or_probe().await,
            Pumped::Out(Outbound::Close(CloseReason::Shutdown))
        ));
    }

    /// Pushes and closes from another thread while the writer parks wake it: every wait ends
    /// (a lost wake-up would hang it until the 10 s failure bound). Both are recorded under
    /// the mutex the writer registers under, which is what leaves no window for a lost one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wake_ups_racing_the_park_are_never_lost() {
        for round in 0..2000 {
            let q = Queue::new(4);
            let close = Arc::new(CloseSignal::new(q.clone()));
            let q2 = q.clone();
            let waiter = tokio::spawn(async move { q2.recv().await });
            let (q3, c3) = (q.clone(), close.clone());
            let other = std::thread::spawn(move || {
                if round % 2 == 0 {
                    q3.push(Outgoing::event(ServerFrame::Pong)).unwrap();
                } else {
                    c3.close(CloseReason::Revoked);
                }
            });
            let out = tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
                .await
                .expect("the waiting writer was woken")
                .unwrap();
            other.join().unwrap();
            if round % 2 == 0 {
                assert!(matches!(out, Outbound::Frame(_)), "{out:?}");
            } else {
                assert!(
                    matches!(out, Outbound::Close(CloseReason::Revoked)),
                    "{out:?}"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_push_wakes_a_waiting_receiver() {
        let q = Queue::new(4);
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.recv().await });
        tokio::task::yield_now().await;
        q.push(Outgoing::event(ServerFrame::Pong)).unwrap();
        assert!(matches!(waiter.await.unwrap(), Outbound::Frame(_)));
        let q3 = q.clone();
        let waiter = tokio::spawn(async move { q3.recv().await });
        tokio::task::yield_now().await;
        q.close();
        assert!(
            matches!(
                waiter.await.unwrap(),
                Outbound::Close(CloseReason::Shutdown)
            ),
            "closing the queue ends a waiting recv"
        );
    }
}
