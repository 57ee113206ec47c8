//! # transport-tcp
//!
//! A TCP transport for [`chat_core`]: one port serves programs (length-delimited postcard
//! frames, "binary mode") and people at a terminal (`nc`, `telnet`: "line mode"). Both run
//! ordinary engine [`Session`](chat_core::Session)s, so a TCP user and a browser user on the
//! WebSocket transport chat in the same rooms. It decides nothing about chat, and its defaults
//! are meant to be safe on the public internet.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! let engine = chat_core::Engine::new(Arc::new(chat_store::MemoryStore::new()));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9090").await?;
//! transport_tcp::serve(listener, engine, transport_tcp::TcpConfig::default(), async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await?;
//! # Ok(()) }
//! ```
//!
//! ## Shape
//! - [`serve`] / [`TcpServer::serve`] accept on a `TcpListener` until a shutdown future
//!   resolves; [`TcpServer::handle_stream`] serves one connection accepted elsewhere (e.g.
//!   after TLS termination), under the same caps.
//! - [`TcpServer::shutdown`], [`TcpServer::stats`], [`TcpServer::limiter`] as on the WebSocket
//!   transport's `WsServer`.
//!
//! ## Choosing the mode: the first byte
//! A binary client's first frame is its `hello`, whose 4-byte big-endian length prefix is far
//! below 16 MiB ([`TcpConfig::max_frame_bytes`] must be), so **the first byte of a binary
//! connection is always `0x00`**. A person never types a NUL. So: first byte `0x00` → binary
//! mode, anything else → line mode ([`Mode::detect`]). One port, no negotiation, no
//! round trip.
//!
//! The price: the server cannot speak first. Line mode's banner is shown when the person
//! first types something (Enter is enough), and a connection that sends nothing is closed
//! without a word after [`TcpConfig::line_auth_timeout`].
//!
//! ## Binary mode
//! Frames are a 4-byte big-endian length, then that many bytes of postcard: a
//! `chat_core::protocol::Request` from the client, a `Response` from the server (tokio-util's
//! `LengthDelimitedCodec`). The first frame must be a `hello` with `auth` (token, login, or a
//! guest name where `Limits::allow_guests`), within [`TcpConfig::auth_timeout`] of
//! connecting; it is answered with `welcome`, or with an `error` and the close (`rate_limited`
//! when a login or guest name is refused by the [`TcpConfig::sign_in_gate`], the
//! application's per-address budget of sign-in attempts: see [`SignInGate`]). A length
//! prefix over `max_frame_bytes` gets a `bad_frame` error and the close, without anything of
//! that length being allocated. A stream that ends inside a frame is closed; the partial frame
//! is never decoded, so nothing of it is applied.
//!
//! Liveness: the server sends an unsolicited `pong` (no id) every
//! [`TcpConfig::keepalive_interval`]; the client must send something — a `ping` will do —
//! at least every [`TcpConfig::idle_timeout`] (60 s), or it is closed as idle.
//!
//! Before closing a connection for a reason the client should know, the server sends an
//! `error` frame without an id whose message starts with the reason: see [`CloseCause`].
//!
//! ## Line mode
//! UTF-8 lines ending in `\n` (a `\r` before it is dropped). The commands are those of the
//! `/help` list (`/login`, `/nick`, `/create`, `/join`, `/leave`, `/rooms`, `/who`, `/msg`,
//! `/history`, `/help`, `/quit`); a plain line is said in the current room, and a room's
//! messages print as `[room] user: text`. `/create` makes a **public** room (so that others
//! can `/join` it by name) and enters it; `/join` joins a public room by name or id (or enters
//! one of the user's own rooms) and makes it the current room. `/login` and `/nick` are put to
//! the [`SignInGate`], if there is one, as a binary `hello` is. A line over
//! [`TcpConfig::max_line_bytes`] or one that is not UTF-8 gets an error line and is discarded;
//! the connection stays usable. Everything from other users is passed through [`sanitize`]:
//! no control character or escape sequence reaches the terminal.
//!
//! Line mode is not a separate chat implementation: each command becomes protocol requests to
//! the same [`Session`](chat_core::Session), run by the same pump, and each frame the session
//! queues is rendered as text. See the `line` module source for how commands are sequenced,
//! and why local output travels as a `ping`.
//!
//! ## Shared with the WebSocket transport
//! Rate limits, idle handling, bounded outbound queues, the slow-consumer policy, batching and
//! the shutdown drain are [`chat_core::conn::pump`]'s; connection caps are
//! [`chat_core::conn::ConnLimiter`]'s (global → "server full", per address → "too many
//! connections"); shutdown is a [`chat_core::conn::ShutdownSignal`]. This crate only says how
//! to read and write frames and lines. (Line mode's writer renders each queued frame from its
//! `Outgoing::response` through [`chat_core::conn::FrameWriter::feed_frame`], the pump's hook
//! for transports that show frames in another form than their encoding.)
//!
//! ## Shutdown
//! When the future given to [`TcpServer::serve`] resolves: the listener is closed, connections
//! not yet authenticated are told "server shutting down" and closed, and each session writes
//! what is already queued (within [`TcpConfig::shutdown_timeout`]), then its last error frame
//! or `! server shutting down` line, and closes. `serve` returns once every connection is
//! gone, at the latest after `write_timeout + shutdown_timeout + 2 × close_timeout`.
//!
//! ## Dependencies, and why each earns its place
//! - `chat-core`: the engine, the protocol and its postcard codec, and the transport-agnostic
//!   [`chat_core::conn`] pieces (session pump, connection caps, shutdown signal) shared with
//!   the WebSocket transport.
//! - `tokio` (`net`, `io-util`, `time`, `rt-multi-thread`): sockets, buffered writes,
//!   deadlines, connection tasks.
//! - `tokio-util` (`codec`): `LengthDelimitedCodec` for the binary framing (a maximum checked
//!   before anything is allocated) and `FramedRead` for a cancel-safe read loop in both modes.
//! - `futures-util`: `StreamExt::next` and `SinkExt::feed`/`flush` on the framed halves.
//! - `bytes`: frames travel as shared `Bytes` from the engine's encode-once cache to the
//!   socket.
//! - `thiserror`, `tracing`: the crate's one error type; structured logs.

#![warn(missing_docs)]

mod binary;
mod close;
mod config;
mod line;
mod server;
mod stats;

pub use close::CloseCause;
pub use config::{SignInGate, TcpConfig};
pub use line::sanitize;
pub use server::{Mode, TcpServer, serve};
pub use stats::TcpStats;

/// Everything that can go wrong in this crate.
///
/// The server's own API only returns [`Error::Config`] and [`Error::Io`]. The other variants
/// are what a peer can do to one connection: they end that connection (with the error frame
/// [`CloseCause`] documents), are counted in [`TcpStats`] and logged, and never reach the
/// caller.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is inconsistent; the message says which fields.
    #[error("invalid transport configuration: {0}")]
    Config(String),
    /// A socket operation failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A binary length prefix announced more than the maximum frame length. Detected from the
    /// prefix alone: nothing of that length was allocated or read.
    #[error("a frame of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// The length the prefix announced.
        len: u64,
        /// The configured maximum.
        max: usize,
    },
    /// The peer's stream ended in the middle of a binary frame.
    #[error("the connection ended inside a frame ({buffered} bytes of it were received)")]
    Truncated {
        /// How many bytes of the unfinished frame (prefix included) had arrived.
        buffered: usize,
    },
}
