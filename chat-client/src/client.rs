//! The handle applications use: requests with replies, and convenience methods for each.

use crate::config::ClientConfig;
use crate::conn::{Conn, Welcome};
use crate::driver::{Command, Driver, Shared};
use crate::error::{ClientError, CloseReason};
use crate::event::Events;
use chat_core::protocol::{
    ClientFrame, Entry, MemberInfo, RoomInfo, RoomSummary, SeqRange, ServerFrame, UnreadInfo,
    UserInfo, WireLimits,
};
use chat_core::{RoomId, RoomKind, Seq, SessionId};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// A connected chat client. Cheap to clone: clones share one connection. The connection task
/// stops (and the [`Events`] stream ends) after [`Client::close`], or when every clone has
/// been dropped.
///
/// Requests may be made from any number of tasks at once; each gets its own reply.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cmds: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    request_timeout: Duration,
    /// Random per client, so that `client_msg_id`s are unique per user across clients.
    msg_prefix: String,
    msg_counter: AtomicU64,
    /// A new guest's token (see [`Client::guest_token`]); `Secret` so that `Debug` of a
    /// client does not print it.
    guest_token: Option<chat_core::protocol::Secret>,
}

/// The reply to `subscribe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The room.
    pub room: RoomId,
    /// The entries after `since_seq`, ascending (empty without `since_seq`). Live messages
    /// follow on the event stream, starting after `latest_seq`.
    pub entries: Vec<Entry>,
    /// The room's latest seq when the subscription went live.
    pub latest_seq: Seq,
    /// Entries that were too many to replay (page them in with [`Client::history`]).
    pub gap: Option<SeqRange>,
}

/// The reply to a send: the message is durably stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The room it is stored in.
    pub room: RoomId,
    /// Its seq.
    pub seq: Seq,
    /// True when this `client_msg_id` had been stored already (a retry): nothing new was
    /// stored or delivered.
    pub duplicate: bool,
    /// The idempotency id the send carried.
    pub client_msg_id: String,
}

/// A page of history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// The room.
    pub room: RoomId,
    /// Ascending by seq.
    pub entries: Vec<Entry>,
    /// Whether older (latest page, `Before`) or newer (`After`) entries exist.
    pub has_more: bool,
}

/// Which page of history to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HistoryFrom {
    /// The newest entries.
    #[default]
    Latest,
    /// The newest entries with a seq below this one.
    Before(Seq),
    /// The oldest entries with a seq above this one.
    After(Seq),
}

impl Client {
    /// Connects, authenticates, and starts the connection task (so this needs a Tokio
    /// runtime). Returns the client and its event stream.
    ///
    /// Fails — without retrying — when the server cannot be reached or refuses the
    /// credentials; [`ClientError::is_auth`] tells the two apart. Reconnection applies only
    /// to a connection that was established once.
    pub async fn connect(mut config: ClientConfig) -> Result<(Client, Events), ClientError> {
        let (conn, mut welcome) = Conn::open(&config).await?;
        let guest_token = welcome.token.clone().map(chat_core::protocol::Secret::from);
        welcome.adopt_token(&mut config);
        let (cmd_tx, cmd_rx) = mpsc::channel(config.max_in_flight);
        let (ev_tx, ev_rx) = mpsc::channel(config.event_capacity);
        let closed = Arc::new(OnceLock::new());
        let shared = Arc::new(Shared {
            closed: closed.clone(),
            welcome: Mutex::new(welcome),
            close: tokio::sync::Notify::new(),
        });
        let request_timeout = config.request_timeout;
        let driver = Driver::new(config, shared.clone(), cmd_rx, ev_tx);
        tokio::spawn(driver.run(conn));
        let client = Client {
            inner: Arc::new(Inner {
                cmds: cmd_tx,
                shared,
                request_timeout,
                msg_prefix: random_prefix(),
                msg_counter: AtomicU64::new(0),
                guest_token,
            }),
        };
        Ok((client, Events::new(ev_rx, closed)))
    }

    /// Who the client is logged in as.
    pub fn user(&self) -> UserInfo {
        self.welcome().user
    }

    /// For a client that signed in as a new guest: the session token the server gave it,
    /// which it now reconnects with. Keep it (like a password) to come back as the same guest
    /// later, with [`Auth::Token`](crate::Auth::Token): the guest's name is taken from now on.
    pub fn guest_token(&self) -> Option<&str> {
        self.inner
            .guest_token
            .as_ref()
            .map(chat_core::protocol::Secret::expose)
    }

    /// The current session's id (it changes with each reconnection).
    pub fn session(&self) -> SessionId {
        self.welcome().session
    }

    /// The limits the server announced (largest body, replay, history page).
    pub fn limits(&self) -> WireLimits {
        self.welcome().limits
    }

    fn welcome(&self) -> Welcome {
        self.inner.shared.welcome()
    }

    /// Why the client stopped, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.inner.shared.closed.get().cloned()
    }

    /// Sends any request and waits for its reply, correlated by request id. An `error` reply
    /// becomes [`ClientError::Server`] with its code.
    ///
    /// The wait is bounded by [`ClientConfig::request_timeout`], which includes time spent
    /// queued behind the client-side pacing or waiting for a reconnection. If the connection
    /// drops with the request in flight, a request that is safe to repeat (reads, `join`,
    /// `mark_read`, a `send` with a `client_msg_id`, ...) is sent again on the new
    /// connection; any other fails with [`ClientError::ConnectionLost`].
    ///
    /// For `typing`, which never gets a reply, use [`Client::typing`]. Subscribing through
    /// this method is tracked like [`Client::subscribe`].
    pub async fn request(&self, frame: ClientFrame) -> Result<ServerFrame, ClientError> {
        let timeout = self.inner.request_timeout;
        let (tx, rx) = oneshot::channel();
        let exchange = async {
            self.inner
                .cmds
                .send(Command::Request { frame, reply: tx })
                .await
                .map_err(|_| self.closed_error())?;
            rx.await.map_err(|_| self.closed_error())?
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
    }

    fn closed_error(&self) -> ClientError {
        ClientError::Closed(self.close_reason().unwrap_or(CloseReason::Closed))
    }

    /// Subscribes to a room: replays the entries after `since` (all of them, up to the
    /// server's `max_replay`, with `Some(Seq(0))`; none with `None`), then the room's new
    /// messages arrive as [`Event::Message`](crate::Event::Message). The client remembers
    /// the room and resumes it after a reconnection from the last seq it delivered.
    pub async fn subscribe(
        &self,
        room: RoomId,
        since: Option<Seq>,
    ) -> Result<Subscription, ClientError> {
        match self
            .request(ClientFrame::Subscribe {
                room,
                since_seq: since,
            })
            .await?
        {
            ServerFrame::Subscribed {
                room,
                entries,
                latest_seq,
                gap,
            } => Ok(Subscription {
                room,
                entries,
                latest_seq,
                gap,
            }),
            other => Err(unexpected("subscribed", other)),
        }
    }

    /// Stops receiving a room (membership is unchanged); it is no longer resumed.
    pub async fn unsubscribe(&self, room: RoomId) -> Result<(), ClientError> {
        self.expect_ok(ClientFrame::Unsubscribe { room }).await
    }

    /// Posts a message with a fresh `client_msg_id`, so that the client's automatic retry
    /// after a dropped connection stores it once. See [`Client::send_with_id`] to retry
    /// yourself after a [`ClientError::Timeout`].
    pub async fn send(&self, room: RoomId, body: impl Into<String>) -> Result<Sent, ClientError> {
        self.send_with_id(room, body, self.new_msg_id()).await
    }

    /// Posts a message with the given `client_msg_id` (1 to 64 printable ASCII characters,
    /// unique per user across all rooms). Sending again with the same id is safe: the reply
    /// then has `duplicate: true` and the original seq.
    pub async fn send_with_id(
        &self,
        room: RoomId,
        body: impl Into<String>,
        client_msg_id: impl Into<String>,
    ) -> Result<Sent, ClientError> {
        let client_msg_id = client_msg_id.into();
        let frame = ClientFrame::Send {
            room,
            body: body.into(),
            client_msg_id: Some(client_msg_id.clone()),
        };
        sent(self.request(frame).await?, client_msg_id)
    }

    /// Sends a direct message to a user (by name), creating the direct room on first use.
    /// Both users then receive an [`Event::Room`](crate::Event::Room) for a new room;
    /// subscribe to it to see the conversation.
    pub async fn send_direct(
        &self,
        to: impl Into<String>,
        body: impl Into<String>,
    ) -> Result<Sent, ClientError> {
        let client_msg_id = self.new_msg_id();
        let frame = ClientFrame::SendDirect {
            to: to.into(),
            body: body.into(),
            client_msg_id: Some(client_msg_id.clone()),
        };
        sent(self.request(frame).await?, client_msg_id)
    }

    /// A fresh `client_msg_id`: the time, this client's random prefix and a counter.
    ///
    /// The prefix and counter make it unique; the time in front (like a UUIDv7 or a ULID)
    /// makes ids from all clients sort roughly in sending order, so a store indexing them
    /// inserts every new one at the end of its index instead of at one place per client
    /// (with SQLite and 256 senders, about twice the appends per second; see
    /// docs/BENCHMARKS.md).
    pub fn new_msg_id(&self) -> String {
        let n = self.inner.msg_counter.fetch_add(1, Ordering::Relaxed);
        msg_id(unix_millis(), &self.inner.msg_prefix, n)
    }

    /// Joins a public room by name (case-insensitive).
    pub async fn join(&self, name: impl Into<String>) -> Result<RoomInfo, ClientError> {
        self.expect_room(ClientFrame::Join {
            room: None,
            name: Some(name.into()),
        })
        .await
    }

    /// Joins a public room by id.
    pub async fn join_id(&self, room: RoomId) -> Result<RoomInfo, ClientError> {
        self.expect_room(ClientFrame::Join {
            room: Some(room),
            name: None,
        })
        .await
    }

    /// Creates a group or public room, owned by this user.
    pub async fn create_room(
        &self,
        name: impl Into<String>,
        kind: RoomKind,
    ) -> Result<RoomInfo, ClientError> {
        self.expect_room(ClientFrame::CreateRoom {
            name: name.into(),
            kind,
        })
        .await
    }

    /// Joins the room an invite code is for.
    pub async fn redeem_invite(&self, code: impl Into<String>) -> Result<RoomInfo, ClientError> {
        self.expect_room(ClientFrame::RedeemInvite { code: code.into() })
            .await
    }

    /// Reads a page of a room's log (`limit` defaults to the server's page size, 50).
    pub async fn history(
        &self,
        room: RoomId,
        from: HistoryFrom,
        limit: Option<u32>,
    ) -> Result<History, ClientError> {
        let (before, after) = match from {
            HistoryFrom::Latest => (None, None),
            HistoryFrom::Before(s) => (Some(s), None),
            HistoryFrom::After(s) => (None, Some(s)),
        };
        match self
            .request(ClientFrame::History {
                room,
                before,
                after,
                limit,
            })
            .await?
        {
            ServerFrame::History {
                room,
                entries,
                has_more,
            } => Ok(History {
                room,
                entries,
                has_more,
            }),
            other => Err(unexpected("history", other)),
        }
    }

    /// The rooms this user is a member of, with unread counts.
    pub async fn rooms(&self) -> Result<Vec<RoomSummary>, ClientError> {
        self.expect_rooms(ClientFrame::Rooms).await
    }

    /// The public rooms (the first 1000 by id).
    pub async fn public_rooms(&self) -> Result<Vec<RoomSummary>, ClientError> {
        self.expect_rooms(ClientFrame::PublicRooms).await
    }

    /// A room's members, with their role and presence.
    pub async fn members(&self, room: RoomId) -> Result<Vec<MemberInfo>, ClientError> {
        match self.request(ClientFrame::Members { room }).await? {
            ServerFrame::Members { members, .. } => Ok(members),
            other => Err(unexpected("members", other)),
        }
    }

    /// Moves the read marker forward to `seq` (inclusive).
    pub async fn mark_read(&self, room: RoomId, seq: Seq) -> Result<UnreadInfo, ClientError> {
        match self.request(ClientFrame::MarkRead { room, seq }).await? {
            ServerFrame::Unread(info) => Ok(info),
            other => Err(unexpected("unread", other)),
        }
    }

    /// Says "I am typing" in a room (which this session must be subscribed to). Never
    /// answered; dropped while disconnected, and by the server beyond one per second.
    pub fn typing(&self, room: RoomId) {
        // A full command queue means the client is busy; typing is best-effort anyway.
        let _ = self
            .inner
            .cmds
            .try_send(Command::Fire(ClientFrame::Typing { room }));
    }

    /// Leaves a room: every session of the user stops receiving it.
    pub async fn leave(&self, room: RoomId) -> Result<(), ClientError> {
        self.expect_ok(ClientFrame::Leave { room }).await
    }

    /// A round trip to the server.
    pub async fn ping(&self) -> Result<Duration, ClientError> {
        let start = Instant::now();
        match self.request(ClientFrame::Ping).await? {
            ServerFrame::Pong => Ok(start.elapsed()),
            other => Err(unexpected("pong", other)),
        }
    }

    /// Closes the connection and stops the client. Requests still waiting fail with
    /// [`ClientError::Closed`]; the event stream ends with
    /// [`Event::Closed`](crate::Event::Closed). Waits (briefly) for the connection task to
    /// finish.
    pub async fn close(&self) {
        self.inner.shared.close.notify_one();
        // The task drops its receiver when it is done (after at most a second of goodbye).
        let _ = tokio::time::timeout(Duration::from_secs(3), self.inner.cmds.closed()).await;
    }

    /// Whether the client has stopped for good.
    pub fn is_closed(&self) -> bool {
        self.inner.cmds.is_closed()
    }

    async fn expect_ok(&self, frame: ClientFrame) -> Result<(), ClientError> {
        match self.request(frame).await? {
            ServerFrame::Ok => Ok(()),
            other => Err(unexpected("ok", other)),
        }
    }

    async fn expect_room(&self, frame: ClientFrame) -> Result<RoomInfo, ClientError> {
        match self.request(frame).await? {
            ServerFrame::Room { room } => Ok(room),
            other => Err(unexpected("room", other)),
        }
    }

    async fn expect_rooms(&self, frame: ClientFrame) -> Result<Vec<RoomSummary>, ClientError> {
        match self.request(frame).await? {
            ServerFrame::Rooms { rooms } => Ok(rooms),
            other => Err(unexpected("rooms", other)),
        }
    }
}

fn sent(frame: ServerFrame, client_msg_id: String) -> Result<Sent, ClientError> {
    match frame {
        ServerFrame::Sent {
            room,
            seq,
            duplicate,
        } => Ok(Sent {
            room,
            seq,
            duplicate,
            client_msg_id,
        }),
        other => Err(unexpected("sent", other)),
    }
}

fn unexpected(wanted: &str, got: ServerFrame) -> ClientError {
    ClientError::Protocol(format!("expected a `{wanted}` reply, got {got:?}"))
}

fn random_prefix() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // Unique enough within one process without the OS's randomness.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        bytes = (t ^ u64::from(std::process::id()).rotate_left(32)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Milliseconds since the Unix epoch (0 for a clock set before it).
fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `client_msg_id` number `n` of the client with `prefix`, made at `millis`: fixed-width
/// hex time first, so that ids sort by time as strings.
fn msg_id(millis: u64, prefix: &str, n: u64) -> String {
    format!("{millis:012x}-{prefix}-{n}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_msg_ids_are_valid_client_msg_ids() {
        let a = random_prefix();
        let b = random_prefix();
        assert_ne!(a, b, "random per client");
        // The longest: the year-10889 clock (12 hex digits) and the largest counter.
        let id = msg_id((1 << 48) - 1, &a, u64::MAX);
        // The protocol's rule: 1 to 64 printable ASCII characters, no spaces.
        assert!(id.len() <= 64, "{id}");
        assert!(id.bytes().all(|c| c.is_ascii_graphic()), "{id}");
        let limits = chat_core::Limits::default();
        assert!(
            chat_core::validate::client_msg_id(&id, &limits).is_ok(),
            "{id}"
        );
    }

    #[test]
    fn generated_msg_ids_sort_by_time_across_clients() {
        let (a, b) = ("ffffffffffffffff", "0000000000000000");
        // A later id of any client sorts after an earlier one of any other, whatever the
        // prefixes and counters.
        assert!(msg_id(1_700_000_000_000, a, 99) < msg_id(1_700_000_000_001, b, 0));
        assert!(msg_id(0xfff, a, 5) < msg_id(0x1000, b, 0), "fixed width");
        assert!(msg_id(1, a, 0) != msg_id(1, b, 0));
    }
}
