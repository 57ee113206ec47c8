//! # transport-ws
//!
//! A WebSocket transport for [`chat_core`], on tokio-tungstenite: it authenticates the
//! handshake, then moves protocol frames between the socket and one engine
//! [`Session`](chat_core::Session) per connection. It decides nothing about chat; it is safe
//! to expose to the internet with its defaults.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! let engine = chat_core::Engine::new(Arc::new(chat_store::MemoryStore::new()));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! transport_ws::serve(listener, engine, transport_ws::WsConfig::default(), async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await?;
//! # Ok(()) }
//! ```
//!
//! ## Shape
//! - **Standalone:** [`serve`] / [`WsServer::serve`] accept on a `TcpListener` until a
//!   shutdown future resolves. [`WsServer::handle_stream`] does the same for one connection
//!   accepted elsewhere (e.g. after TLS termination).
//! - **Embedded:** your HTTP server upgrades; [`WsServer::authorize`] makes the same decision
//!   the standalone handshake makes (origin, credentials, codec) from the request's URI and
//!   headers, and [`WsServer::run_admitted`] runs the session over any `WebSocketStream<S>`
//!   ([`WsServer::run_upgraded`] if you established the [`Identity`](chat_core::Identity)
//!   yourself).
//! - **axum** (feature `axum`): `transport_ws::axum::router(server, "/ws")`, or route
//!   `transport_ws::axum::handler` yourself.
//!
//! ## Features
//!
//! | Feature | Default | Adds |
//! |---|---|---|
//! | `axum` | no | the `axum` module: an upgrade handler and a router for axum 0.8 |
//!
//! ## The handshake (all before the upgrade)
//! 1. Connection caps: over [`WsConfig::max_connections`] → **503**, over
//!    [`WsConfig::max_connections_per_ip`] → **429** (both with `Retry-After`).
//! 2. The request head is read into a buffer capped at [`WsConfig::max_request_bytes`]
//!    (→ **431**) within [`WsConfig::handshake_timeout`] (slowloris: dropped).
//! 3. RFC 6455 mechanics (GET, HTTP/1.1, `Upgrade`, `Sec-WebSocket-Key`/`-Version`) → 4xx.
//! 4. `Origin` against [`OriginPolicy`] (CSWSH) → **403**.
//! 5. Credentials per [`AuthConfig`] — `Authorization: Bearer`, `?token=`, or a cookie —
//!    checked by the engine's [`Authenticator`](chat_core::Authenticator) → **401** with a
//!    JSON body. A development-only identity parameter exists, off by default. Optionally
//!    ([`AuthConfig::hello`]) a connection without credentials is upgraded and must send a
//!    `hello` with `auth` first (close **4401** otherwise).
//! 6. `101 Switching Protocols`; permessage-deflate (or any extension) is never negotiated.
//!
//! See the `handshake` module source for why the request is parsed here rather than in
//! tungstenite's synchronous header callback.
//!
//! ## Codecs
//! Text frames carry the JSON codec and binary frames the postcard codec, whichever the
//! connection uses for its replies. The connection's reply codec is, in order:
//! 1. the subprotocol: `Sec-WebSocket-Protocol: chat.v1.json` or `chat.v1.postcard`
//!    ([`PROTOCOL_JSON`], [`PROTOCOL_POSTCARD`]; echoed in the `101`);
//! 2. else the query parameter `codec=json` or `codec=postcard`;
//! 3. else the type of the client's first data frame (text → JSON, binary → postcard).
//!    Anything the server sends before that first frame is JSON.
//!
//! ## Limits and liveness
//! Every limit is a field of [`WsConfig`] with its default and reason. In short: 64 KiB
//! messages and frames (→ close **1009**), invalid UTF-8 → **1007**, the engine's request
//! rate limit (`rate_limited` error frames, then **1008**), pings every 25 s and a 20 s pong
//! deadline (→ **1001** `idle_timeout`), small tungstenite buffers (4 KiB read, 8 KiB write),
//! batched writes with one flush per batch, slow consumers cut off with **1013**, revoked
//! tokens with **4401**. [`CloseCause`] has the full table.
//!
//! ## Shutdown
//! When the future given to [`WsServer::serve`] resolves: the listener is dropped, handshakes
//! in progress are abandoned, every session writes what is already queued and is closed with
//! **1001**, all within [`WsConfig::shutdown_timeout`] (plus a batch already being written and
//! the close handshake); stragglers are then dropped. [`Engine::shutdown`](chat_core::Engine::shutdown) has the same effect on
//! the sessions.
//!
//! ## Dependencies, and why each earns its place
//! - `tokio` (`net`, `io-util`, `time`, `rt-multi-thread`): sockets, deadlines, tasks.
//! - `tokio-tungstenite` (`handshake` only, no TLS): the WebSocket framing, masking, UTF-8
//!   validation and control frames — the part that is easy to get subtly wrong — plus
//!   `derive_accept_key` and the `http` types. TLS is left to whoever terminates it.
//! - `httparse`: a zero-copy, bounded HTTP/1.1 request parser, so the handshake can be async
//!   (token look-ups) without tungstenite's synchronous callback.
//! - `futures-util`: `split` of the WebSocket into halves the reader and writer drive
//!   concurrently, and `SinkExt::feed` for batching.
//! - `serde_json`: the small JSON bodies of refused handshakes.
//! - `thiserror`, `tracing`: the crate's one error type; structured logs.
//! - `chat-core`: the engine, and its transport-agnostic [`chat_core::conn`] pieces (the
//!   session pump, connection caps, shutdown signal) shared with the TCP transport.
//! - `bytes`: frames travel as shared `Bytes` from the engine's encode-once cache to the
//!   socket.
//! - `axum` (optional): only for the `axum` feature. It uses the same tokio-tungstenite
//!   version as this crate, which is why that dependency is pinned to axum's.

#![warn(missing_docs)]

#[cfg(feature = "axum")]
pub mod axum;
mod config;
mod connection;
mod handshake;
mod server;
mod stats;

pub use chat_core::conn::CodecChoice;
pub use config::{AuthConfig, OriginPolicy, WsConfig};
pub use connection::CloseCause;
pub use handshake::{Admission, PROTOCOL_JSON, PROTOCOL_POSTCARD, Rejection};
pub use server::{WsServer, serve};
pub use stats::WsStats;
/// Re-exported so embedders name the same tungstenite (and `http`) versions this crate uses.
pub use tokio_tungstenite;

/// Everything that can go wrong in this crate's API.
///
/// Per-connection failures (a refused handshake, a peer that breaks the protocol) are not
/// errors of the server: they end that connection, are counted in [`WsStats`] and logged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is inconsistent; the message says which fields.
    #[error("invalid transport configuration: {0}")]
    Config(String),
    /// A socket operation of the server itself failed (e.g. reading the listener's address).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}
