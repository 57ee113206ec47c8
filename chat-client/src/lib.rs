//! # chat-client
//!
//! A Rust client for the chat engine's wire protocol (`docs/PROTOCOL.md`), over TCP binary
//! mode or WebSocket, and the `chat-cli` terminal client built on it.
//!
//! - [`Client::connect`] connects ([`Transport::Tcp`] or [`Transport::Ws`]) and authenticates
//!   ([`Auth`]: a token, a username and password, a guest name).
//! - [`Client::request`] sends any [`ClientFrame`] and returns its reply, correlated by request
//!   id, within a timeout; an `error` reply is a [`ClientError::Server`] carrying the stable
//!   [`ErrorCode`]. Convenience methods cover the common requests: [`Client::subscribe`],
//!   [`Client::send`], [`Client::send_direct`], [`Client::join`], [`Client::create_room`],
//!   [`Client::history`], [`Client::rooms`], [`Client::members`], [`Client::mark_read`],
//!   [`Client::typing`], [`Client::leave`].
//! - [`Events`] is the stream of everything else: messages, presence, typing, membership,
//!   room announcements, notices, and the connection's own news ([`Event::Disconnected`],
//!   [`Event::Reconnected`], [`Event::Closed`]).
//!
//! The protocol's types are chat-core's own ([`chat_core::protocol`]); this crate never
//! redefines them.
//!
//! ```no_run
//! use chat_client::{Auth, Client, ClientConfig, Event, Transport};
//! use chat_core::RoomKind;
//!
//! # async fn demo() -> Result<(), chat_client::ClientError> {
//! let config = ClientConfig::new(
//!     Transport::Tcp("127.0.0.1:9090".into()),
//!     Auth::Login { username: "alice".into(), password: "correct horse".into() },
//! );
//! let (client, mut events) = Client::connect(config).await?;
//!
//! let room = client.create_room("lobby", RoomKind::Public).await?;
//! client.subscribe(room.id, None).await?;
//! let sent = client.send(room.id, "hello").await?;
//! println!("stored as seq {}", sent.seq);
//!
//! while let Some(event) = events.recv().await {
//!     match event {
//!         Event::Message(m) => println!("[{}] {}: {}", m.room, m.sender_name, m.body),
//!         Event::Reconnected { resumed, .. } => println!("reconnected, resumed {resumed} rooms"),
//!         Event::Closed(reason) => println!("closed: {reason}"),
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! Over WebSocket, a token goes in the `Authorization: Bearer` header by default; a login or a
//! guest name goes in the `hello` and needs a server with transport-ws's `AuthConfig::hello`:
//!
//! ```no_run
//! # async fn demo() -> Result<(), chat_client::ClientError> {
//! use chat_client::{Auth, Client, ClientConfig, Transport};
//! let mut config = ClientConfig::new(
//!     Transport::Ws("ws://127.0.0.1:8080/ws".into()),
//!     Auth::Token("q3Jx0Yk8pW2lT6eR9uN4sA1cB7dF5gH3jK0mL2nP8oQ".into()),
//! );
//! config.codec = chat_core::Codec::Postcard; // binary frames, `chat.v1.postcard`
//! let (client, _events) = Client::connect(config).await?;
//! println!("logged in as {}", client.user().username);
//! # Ok(()) }
//! ```
//!
//! ## Reconnection and resume
//!
//! When the connection drops — an I/O error, the server closing it (WebSocket 1001
//! `shutdown`/`idle_timeout`, 1013 `slow_consumer`, 1008 `policy_violation` after a pause), or
//! a keepalive ping left unanswered — the client reconnects with capped, jittered exponential
//! backoff ([`ReconnectPolicy`], bounded attempts), authenticates again with the same
//! credentials, and resubscribes every room it was subscribed to with `since_seq` = the last
//! seq it delivered. The replay fills the hole; [`Event::Reconnected`] then says how many
//! rooms were resumed. Requests that were in flight and are safe to repeat are sent again —
//! a [`Client::send`] carries a generated `client_msg_id`, so the retry is stored once — and
//! the others fail with [`ClientError::ConnectionLost`].
//!
//! It does **not** reconnect when the server revoked the session (WebSocket close 4401; over
//! TCP, which has no close frame, the server's last `error` frame says `revoked: ...`) or
//! refuses the credentials: the client closes with [`CloseReason::Revoked`] or
//! [`CloseReason::AuthFailed`]. TCP's other farewells (`shutdown:`, `slow_consumer:`,
//! `policy_violation:`, ...) are treated like the WebSocket close codes of the same reasons.
//!
//! ## Delivery to the consumer
//!
//! Per room, [`Event::Message`]s come in seq order with **no duplicate and no gap**: the
//! client tracks the last seq it delivered per room and drops anything at or below it, and
//! resumes from exactly there. The one exception is a resume after more than the server's
//! `max_replay` (500) missed entries, announced by [`Event::Gap`].
//!
//! The event channel is bounded ([`ClientConfig::event_capacity`]) and the client never
//! waits for the consumer: replies keep flowing even if nobody reads the events. A consumer
//! that falls behind loses ephemeral events (presence, typing — counted in
//! [`Event::Lagged`]), and a room whose message found the channel full is resubscribed from its
//! last delivered seq once the consumer has caught up, so its messages still arrive, in
//! order, exactly once.
//!
//! ## Bounds
//!
//! Nothing grows without limit: requests queued or awaiting replies are capped by
//! [`ClientConfig::max_in_flight`] (callers then wait), events by the channel capacity plus a
//! small backlog, reconnection attempts by [`ReconnectPolicy::max_attempts`], the backoff by
//! [`ReconnectPolicy::max_delay`], retries of one request by
//! [`ClientConfig::max_request_retries`]. A client-side token bucket ([`Pacing`]) keeps
//! requests under the server's rate limit.
//!
//! ## `chat-cli`
//!
//! The binary (feature `cli`, on by default) is an interactive terminal client:
//! `chat-cli --tcp 127.0.0.1:9090 --user alice --password '…'`, or
//! `chat-cli --ws ws://127.0.0.1:8080/ws --token …`. See the README for a session against the
//! development servers. Its loop lives in [`cli`], driven through the [`cli::Console`] trait,
//! so it is tested without a terminal.
//!
//! ## Features
//!
//! | Feature | Default | Adds |
//! |---|---|---|
//! | `cli` | yes | the `chat-cli` binary's dependencies (`clap`, `rustyline-async`) |
//!
//! A program that only needs the client API (a load tool, a bot) can use
//! `default-features = false`: the library itself never depends on them.
//!
//! ## Dependencies, and why each earns its place
//!
//! - `chat-core`: the protocol's types and codecs — the one definition of the wire format.
//! - `tokio` (`net`, `time`, `sync`, `rt`, `macros`, `io-util`, `io-std`): sockets, the
//!   connection task, timeouts, bounded channels; `io-std` for `chat-cli` reading a pipe.
//! - `tokio-util` (`codec`): `LengthDelimitedCodec`, exactly the TCP framing agreed with the
//!   server (4-byte big-endian length), with an explicit maximum.
//! - `tokio-tungstenite` (`handshake` only, no TLS): the WebSocket client handshake and
//!   framing, the same crate and version the server uses.
//! - `futures-util`: `SinkExt`/`StreamExt` over the framed connections, and the `Stream`
//!   impl of [`Events`].
//! - `bytes`: encoded frames as `Bytes` from the codec to the socket.
//! - `getrandom`: the random part of generated `client_msg_id`s (unique per user across
//!   clients) and the reconnection jitter seed; already in the workspace through chat-core.
//! - `thiserror`, `tracing`: the crate's one error type; structured logs.
//! - `clap` (feature `cli`): `chat-cli`'s arguments, already the workspace's choice.
//! - `rustyline-async` (feature `cli`): a line editor built for async programs: the prompt
//!   is read in one task while other output is written through a `SharedWriter` that prints
//!   *above* the line being edited and redraws it, so incoming messages never garble what the
//!   user is typing. `reedline` (with its external printer) was the alternative: it is
//!   blocking (a thread of its own, output polled on a timer) and its current release needs
//!   Rust 1.95, above the workspace's 1.85.

#![warn(missing_docs)]

pub mod cli;
mod client;
mod config;
mod conn;
mod driver;
mod error;
mod event;
pub mod sanitize;

pub use chat_core::protocol::{ClientFrame, ServerFrame};
pub use chat_core::{Codec, ErrorCode};
pub use client::{Client, History, HistoryFrom, Sent, Subscription};
pub use config::{Auth, ClientConfig, Pacing, ReconnectPolicy, Transport, WsTokenPlacement};
pub use error::{ClientError, CloseReason};
pub use event::{Event, Events};
