//! What the server (and the connection) tell the application without being asked.

use crate::error::CloseReason;
use chat_core::protocol::{Entry, MemberChange, RoomInfo, SeqRange, UnsubscribeReason, UserInfo};
use chat_core::{ErrorCode, RoomId, SessionId};
use futures_util::Stream;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// An event from the [`Events`] stream.
///
/// Messages ([`Event::Message`]) arrive per room in seq order, without gaps and without
/// duplicates, across reconnections; see the crate docs. The other events are best-effort,
/// as the protocol makes them (`docs/PROTOCOL.md` §11).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A new entry in a subscribed room (live, or missed while disconnected and replayed on
    /// resume). The author's own messages arrive here too (match them to your sends with
    /// `client_msg_id`).
    Message(Entry),
    /// More entries were missed than the server replays (`max_replay`, 500 by default): those
    /// in `range` were *not* delivered. Page them in with
    /// [`Client::history`](crate::Client::history) (`after = range.from − 1`) if needed.
    Gap {
        /// The room.
        room: RoomId,
        /// The seqs that were skipped, inclusive.
        range: SeqRange,
    },
    /// A user came online in a room (first session subscribed) or went offline.
    Presence {
        /// The room.
        room: RoomId,
        /// Who.
        user: UserInfo,
        /// Whether they are now online in the room.
        online: bool,
    },
    /// Someone is typing in a room (show it for a few seconds; there is no "stopped" event).
    Typing {
        /// The room.
        room: RoomId,
        /// Who.
        user: UserInfo,
    },
    /// A member joined, left, was kicked or changed role.
    MemberChanged {
        /// The room.
        room: RoomId,
        /// The member.
        user: UserInfo,
        /// What changed.
        change: MemberChange,
    },
    /// This user now belongs to a room (created, joined, added, invited, or a first direct
    /// message). Subscribe to it to receive its messages.
    Room(RoomInfo),
    /// A notice from the server's application (not stored).
    Notice {
        /// The room it concerns, if any.
        room: Option<RoomId>,
        /// The text.
        body: String,
    },
    /// The session no longer receives a room (left from any session, kicked, deleted). The
    /// client forgets the room: it is not resumed after a reconnection.
    Unsubscribed {
        /// The room.
        room: RoomId,
        /// Why.
        reason: UnsubscribeReason,
    },
    /// An `error` frame that answers no request of this client (e.g. `bad_frame` or
    /// `rate_limited` without an id).
    ServerError {
        /// The code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The consumer fell behind: `dropped` ephemeral events (presence, typing, member
    /// changes, notices) were discarded because the event channel was full. Messages are never
    /// dropped this way: they are re-read from the server.
    Lagged {
        /// How many events were discarded since the last `Lagged`.
        dropped: u64,
    },
    /// The connection dropped; the client is reconnecting. Sent before each attempt.
    Disconnected {
        /// Why the connection ended (or why the previous attempt failed).
        reason: String,
        /// The attempt about to be made, from 1.
        attempt: u32,
        /// How long the client waits before it.
        retry_in: Duration,
    },
    /// A room could not be resumed — after a reconnection or in place, after the consumer
    /// lagged: for example `not_member` (the user was removed while away) or `seq_ahead`
    /// (the server's log no longer matches). A passing failure (`rate_limited`,
    /// `storage_error`) is retried with a growing wait first, and reported only when several
    /// attempts failed. The client forgets the room, and unsubscribes it on the server;
    /// subscribe again to retry.
    ResumeFailed {
        /// The room.
        room: RoomId,
        /// The server's error code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The client is connected again, re-authenticated, and every room it was subscribed to
    /// has been resubscribed from the last seq it delivered: missed messages were delivered
    /// (as [`Event::Message`]) before this event. Requests in flight at the drop that are safe
    /// to repeat were re-sent (sends with their original `client_msg_id`, so each is stored
    /// once).
    Reconnected {
        /// The new session's id.
        session: SessionId,
        /// How many rooms were resumed.
        resumed: usize,
        /// How many rooms could not be resumed (each reported by [`Event::ResumeFailed`]).
        failed: usize,
    },
    /// The client stopped for good. Always the last event.
    Closed(CloseReason),
}

impl Event {
    /// Ephemeral events may be dropped when the consumer lags; the others are kept (in a
    /// bounded backlog) or, for messages, re-read from the server.
    pub(crate) fn is_ephemeral(&self) -> bool {
        matches!(
            self,
            Event::Presence { .. }
                | Event::Typing { .. }
                | Event::MemberChanged { .. }
                | Event::Notice { .. }
        )
    }
}

/// The stream of [`Event`]s of one client: a bounded channel filled by the client's
/// connection task. Read it promptly; see [`ClientConfig::event_capacity`] for what happens
/// when you do not.
///
/// It ends after yielding [`Event::Closed`]. It also implements [`futures_util::Stream`].
///
/// [`ClientConfig::event_capacity`]: crate::ClientConfig::event_capacity
#[derive(Debug)]
pub struct Events {
    rx: mpsc::Receiver<Event>,
    closed: Arc<OnceLock<CloseReason>>,
    done: bool,
}

impl Events {
    pub(crate) fn new(rx: mpsc::Receiver<Event>, closed: Arc<OnceLock<CloseReason>>) -> Events {
        Events {
            rx,
            closed,
            done: false,
        }
    }

    /// The next event; `None` after [`Event::Closed`] has been returned.
    pub async fn recv(&mut self) -> Option<Event> {
        std::future::poll_fn(|cx| self.poll_next_event(cx)).await
    }

    /// The next event if one is ready.
    pub fn try_recv(&mut self) -> Option<Event> {
        match self.rx.try_recv() {
            Ok(e) => Some(e),
            Err(mpsc::error::TryRecvError::Empty) => None,
            Err(mpsc::error::TryRecvError::Disconnected) => self.closing(),
        }
    }

    fn closing(&mut self) -> Option<Event> {
        if self.done {
            return None;
        }
        self.done = true;
        let reason = self.closed.get().cloned().unwrap_or(CloseReason::Closed);
        Some(Event::Closed(reason))
    }

    fn poll_next_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(e)) => Poll::Ready(Some(e)),
            Poll::Ready(None) => Poll::Ready(self.closing()),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Stream for Events {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.get_mut().poll_next_event(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_stream_ends_with_the_close_reason_once() {
        let (tx, rx) = mpsc::channel(4);
        let closed = Arc::new(OnceLock::new());
        let mut events = Events::new(rx, closed.clone());
        tx.send(Event::Lagged { dropped: 1 }).await.unwrap();
        closed.set(CloseReason::Revoked).unwrap();
        drop(tx);
        assert_eq!(events.recv().await, Some(Event::Lagged { dropped: 1 }));
        assert_eq!(
            events.recv().await,
            Some(Event::Closed(CloseReason::Revoked))
        );
        assert_eq!(events.recv().await, None);
        assert_eq!(events.try_recv(), None);
    }
}
