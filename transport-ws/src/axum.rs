//! axum integration (feature `axum`): a handler that makes the same handshake decision as the
//! standalone server, then runs the session on axum's own `WebSocket`.
//!
//! ```no_run
//! # async fn run(server: transport_ws::WsServer) -> std::io::Result<()> {
//! let app = axum::Router::new()
//!     // ... the application's own routes ...
//!     .merge(transport_ws::axum::router(server, "/ws"));
//! use axum::serve::ListenerExt;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080")
//!     .await?
//!     // Frames are small writes that must go at once; `axum::serve` leaves Nagle on.
//!     .tap_io(|tcp| {
//!         let _ = tcp.set_nodelay(true);
//!     });
//! axum::serve(listener, app).await
//! # }
//! ```
//!
//! With an application state of its own, route [`handler`] directly and implement
//! `FromRef<AppState> for WsServer`.
//!
//! What differs from the standalone server: the socket is the application's, so it must set
//! `TCP_NODELAY` itself as above (the standalone server does); the HTTP request is read and
//! limited by hyper (header size, timeouts are the application's server settings), and
//! connections are not counted against [`crate::WsConfig::max_connections`] — count them in
//! the application (e.g. with [`WsServer::limiter`]) if it needs caps. Everything after the
//! upgrade — limits, codecs, pings, slow consumers, close codes, [`WsServer::shutdown`] — is
//! the same.

use crate::{Admission, CloseCause, Rejection, WsServer};
use axum::Router;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use chat_core::Codec;
use chat_core::conn::{FrameReader, FrameWriter, Inbound};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use std::error::Error as _;
use std::future::Future;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Error as WsError;

/// A router with [`handler`] on `GET path`, carrying `server` as its state.
pub fn router<S>(server: WsServer, path: &str) -> Router<S> {
    Router::new().route(path, get(handler)).with_state(server)
}

/// The upgrade handler: refuses with the same HTTP responses as the standalone server (401,
/// 403, … with a JSON body), or upgrades with the configured limits and runs the session.
pub async fn handler(
    State(server): State<WsServer>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let admission = match server.authorize(&uri, &headers).await {
        Ok(a) => a,
        Err(r) => return rejection_response(&r),
    };
    let c = server.config();
    let mut upgrade = upgrade
        .read_buffer_size(c.read_buffer_bytes)
        .write_buffer_size(c.write_buffer_bytes)
        .max_write_buffer_size(c.max_write_buffer_bytes)
        .max_message_size(c.max_message_bytes)
        .max_frame_size(c.max_frame_bytes)
        .accept_unmasked_frames(false);
    if let Some(protocol) = admission.protocol {
        upgrade = upgrade.protocols([protocol]);
    }
    upgrade.on_upgrade(move |socket| {
        // Boxed before the task's future captures it: see `WsServer::run_axum`.
        let socket = Box::new(socket);
        async move {
            server.run_axum(socket, admission).await;
        }
    })
}

/// A [`Rejection`] as an axum response.
pub fn rejection_response(r: &Rejection) -> Response {
    let status = StatusCode::from_u16(r.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        r.body(),
    )
        .into_response();
    insert_rejection_headers(r, response.headers_mut());
    response
}

/// The headers a [`Rejection`] carries (`WWW-Authenticate`, `Retry-After`, …), for an
/// application that answers it in its own body shape.
pub fn insert_rejection_headers(r: &Rejection, headers: &mut axum::http::HeaderMap) {
    for (name, value) in r.headers() {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(n, v);
        }
    }
}

impl WsServer {
    /// Runs a connection axum upgraded, as [`WsServer::run_admitted`] does for tungstenite
    /// streams.
    ///
    /// Takes the socket boxed or not. Boxed is cheaper for a server holding many idle
    /// connections: a future keeps room for its arguments for its whole life, so a
    /// `WebSocket` (some 350 bytes) passed by value through `on_upgrade`'s closure and these
    /// calls is paid for at every level, for as long as the connection lives. Box it where
    /// axum hands it over: `on_upgrade(|s| { let s = Box::new(s); async move { … } })`.
    ///
    /// Not an `async fn` for the same reason: it returns [`WsServer::run_axum_with`]'s future
    /// itself rather than one that holds another copy of the arguments around it.
    pub fn run_axum(
        &self,
        socket: impl Into<Box<WebSocket>> + Send,
        admission: Admission,
    ) -> impl Future<Output = CloseCause> + Send + '_ {
        let socket: Box<WebSocket> = socket.into();
        self.run_axum_with(socket, admission, Vec::new())
    }

    /// [`WsServer::run_axum`], first handling `initial` requests on the session as if the
    /// client had sent them, so their replies are the first frames it reads — e.g. a socket
    /// that is subscribed to a room from the start (`/chatsocket/{room}` in chat-server).
    /// For a session that still has to `hello`, they are handled after it.
    ///
    /// Takes the socket boxed or not; see [`WsServer::run_axum`] for why boxed is cheaper.
    pub async fn run_axum_with(
        &self,
        socket: impl Into<Box<WebSocket>> + Send,
        admission: Admission,
        initial: Vec<chat_core::Request>,
    ) -> CloseCause {
        let socket: Box<WebSocket> = socket.into();
        let (sink, stream) = (*socket).split();
        let mut reader = AxumReader(stream);
        let mut writer = AxumWriter(sink);
        let cause = self
            .session(
                &mut reader,
                &mut writer,
                admission.identity,
                admission.codec,
                initial,
                of_axum_error,
            )
            .await;
        if let Ok(socket) = reader.0.reunite(writer.0) {
            goodbye(socket, cause, self.config().close_timeout).await;
        }
        cause
    }
}

/// axum wraps tungstenite's errors; this crate and axum share one tungstenite, so the
/// original is recovered by downcasting.
fn of_axum_error(e: &axum::Error) -> CloseCause {
    match e.source().and_then(|s| s.downcast_ref::<WsError>()) {
        Some(ws) => CloseCause::of_read_error(ws),
        None => CloseCause::Io,
    }
}

struct AxumReader(SplitStream<WebSocket>);

impl FrameReader for AxumReader {
    type Error = axum::Error;

    async fn read(&mut self) -> Result<Option<Inbound>, axum::Error> {
        match self.0.next().await {
            None => Ok(None),
            Some(Err(e)) => Err(e),
            Some(Ok(msg)) => Ok(match msg {
                Message::Text(t) => Some(Inbound::Frame {
                    codec: Codec::Json,
                    bytes: Bytes::from(t),
                }),
                Message::Binary(b) => Some(Inbound::Frame {
                    codec: Codec::Postcard,
                    bytes: b,
                }),
                Message::Close(_) => None,
                Message::Ping(_) | Message::Pong(_) => Some(Inbound::Alive),
            }),
        }
    }
}

struct AxumWriter(SplitSink<WebSocket, Message>);

impl FrameWriter for AxumWriter {
    type Error = axum::Error;

    async fn feed(&mut self, codec: Codec, bytes: Bytes) -> Result<(), axum::Error> {
        let msg = match codec {
            Codec::Json => Message::Text(Utf8Bytes::try_from(bytes).map_err(axum::Error::new)?),
            Codec::Postcard => Message::Binary(bytes),
        };
        self.0.feed(msg).await
    }

    fn flush(&mut self) -> impl Future<Output = Result<(), axum::Error>> + Send {
        self.0.flush()
    }

    fn probe(&mut self) -> impl Future<Output = Result<(), axum::Error>> + Send {
        self.0.feed(Message::Ping(Bytes::new()))
    }
}

/// The close handshake through axum (which does not expose the socket, so no lingering
/// close): our close frame, then the peer's frames until its close, within `timeout`.
async fn goodbye(mut socket: WebSocket, cause: CloseCause, timeout: Duration) {
    let _ = tokio::time::timeout(timeout, async move {
        let frame = match cause.code() {
            Some(code) => Some(CloseFrame {
                code,
                reason: Utf8Bytes::from_static(cause.as_str()),
            }),
            None if cause == CloseCause::PeerClosed => None,
            None => return,
        };
        let _ = socket.send(Message::Close(frame)).await;
        while let Some(Ok(_)) = socket.next().await {}
    })
    .await;
}
