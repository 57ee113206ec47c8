//! The WebSocket endpoints. Both speak the JSON protocol of `docs/PROTOCOL.md` (or postcard
//! in binary frames) and are authenticated by the session cookie — or a bearer token or
//! `?token=` for other clients — during the handshake, with the `Origin` checked against this
//! server's own and the allowed origins (cross-site WebSocket hijacking).
//!
//! - `GET /ws`: a plain session; the client subscribes to what it wants. The web UI uses it.
//! - `GET /chatsocket/{id}` (the old web chat's socket): the same, already subscribed to room
//!   `id` — the `subscribed` reply is the first frame — and refused with 404 / 403 before the
//!   upgrade for an unknown room or a non-member.
//!
//! Both count against `--max-connections` / `--max-connections-per-ip` (the axum integration
//! of transport-ws leaves connection caps to the application) and are tracked, so shutdown
//! waits for their goodbyes.

use crate::AppState;
use crate::api::{ApiPath, readable_room};
use crate::error::ApiError;
use crate::security::CurrentUser;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, OriginalUri, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chat_core::conn::{
    CodecChoice, ConnPermit, FrameReader, FrameWriter, Inbound, PumpConfig, PumpEnd, Refused, pump,
};
use chat_core::protocol::ClientFrame;
use chat_core::{CloseReason, Codec, Identity, Request, RoomId, Seq};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use std::net::SocketAddr;
use transport_ws::axum::rejection_response;
use transport_ws::{CloseCause, WsConfig};

/// `GET /ws`: authorizes like transport-ws's own handler, then runs the session on axum's
/// socket through transport-ws.
pub(crate) async fn ws(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(r) => return not_websocket(r),
    };
    let permit = match admit(&app, peer) {
        Ok(p) => p,
        Err(why) => return refusal(why),
    };
    let admission = match app.ws.authorize(&uri, &headers).await {
        Ok(a) => a,
        Err(r) => return rejection_response(&r),
    };
    let upgrade = configure(upgrade, app.ws.config(), admission.protocol);
    let server = app.ws.clone();
    let tracker = app.sockets.clone();
    upgrade.on_upgrade(move |socket| {
        tracker.track_future(async move {
            server.run_axum(socket, admission).await;
            drop(permit);
        })
    })
}

#[derive(Deserialize)]
pub(crate) struct ChatSocketParams {
    /// Replay the room's entries after this seq first (as `subscribe`'s `since_seq`).
    since_seq: Option<u64>,
}

/// `GET /chatsocket/{id}`: a session subscribed to room `id` from the start.
pub(crate) async fn chatsocket(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    ApiPath(room): ApiPath<u64>,
    params: Result<Query<ChatSocketParams>, axum::extract::rejection::QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(r) => return not_websocket(r),
    };
    let since_seq = match params {
        Ok(Query(p)) => p.since_seq.map(Seq),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let permit = match admit(&app, peer) {
        Ok(p) => p,
        Err(why) => return refusal(why),
    };
    let admission = match app.ws.authorize(&uri, &headers).await {
        Ok(a) => a,
        Err(r) => return rejection_response(&r),
    };
    // transport-ws only admits a connection without an identity when in-band `hello` is on,
    // which this server never turns on.
    let Some(identity) = admission.identity.clone() else {
        return ApiError::unauthenticated().into_response();
    };
    // Refuse before upgrading: an HTTP status is clearer than a socket that closes at once.
    let user = CurrentUser {
        identity: identity.clone(),
        token: String::new(),
    };
    if let Err(e) = readable_room(&app, &user, RoomId(room)).await {
        return e.into_response();
    }
    let upgrade = configure(upgrade, app.ws.config(), admission.protocol);
    let tracker = app.sockets.clone();
    let codec = admission.codec;
    upgrade.on_upgrade(move |socket| {
        tracker.track_future(async move {
            let cause =
                run_subscribed(&app, socket, identity, codec, RoomId(room), since_seq).await;
            tracing::debug!(room, cause = cause.as_str(), "chatsocket closed");
            drop(permit);
        })
    })
}

/// A WebSocket connection slot for the client's address.
fn admit(app: &AppState, peer: SocketAddr) -> Result<ConnPermit, Refused> {
    app.ws.limiter().try_acquire(peer.ip())
}

/// The refusal transport-ws's own server gives: 503 or 429, with `Retry-After`.
fn refusal(why: Refused) -> Response {
    let (status, code) = match why {
        Refused::Full => (StatusCode::SERVICE_UNAVAILABLE, "server_busy"),
        Refused::PerIp => (StatusCode::TOO_MANY_REQUESTS, "too_many_connections"),
    };
    let mut r = ApiError::new(status, code, why.to_string()).into_response();
    r.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("5"),
    );
    r
}

fn not_websocket(r: WebSocketUpgradeRejection) -> Response {
    let status = r.status();
    ApiError::new(
        if status.is_client_error() {
            status
        } else {
            StatusCode::BAD_REQUEST
        },
        "not_websocket",
        format!("this endpoint speaks WebSocket only: {}", r.body_text()),
    )
    .into_response()
}

/// The transport's limits on axum's upgrade, as transport-ws's own handler sets them.
fn configure(
    upgrade: WebSocketUpgrade,
    c: &WsConfig,
    protocol: Option<&'static str>,
) -> WebSocketUpgrade {
    let upgrade = upgrade
        .read_buffer_size(c.read_buffer_bytes)
        .write_buffer_size(c.write_buffer_bytes)
        .max_write_buffer_size(c.max_write_buffer_bytes)
        .max_message_size(c.max_message_bytes)
        .max_frame_size(c.max_frame_bytes)
        .accept_unmasked_frames(false);
    match protocol {
        Some(p) => upgrade.protocols([p]),
        None => upgrade,
    }
}

// ---------------------------------------------------------------------------------------------
// The pre-subscribed session. transport-ws's axum integration runs a session from its first
// frame and has no hook to act on the session before the pump starts, so this one is pumped
// here, with chat-core's shared pump and transport-ws's close codes. If transport-ws grows
// such a hook (e.g. `run_axum_with(socket, admission, initial_requests)`), everything below
// reduces to one call.
// ---------------------------------------------------------------------------------------------

async fn run_subscribed(
    app: &AppState,
    socket: WebSocket,
    identity: Identity,
    codec: CodecChoice,
    room: RoomId,
    since_seq: Option<Seq>,
) -> CloseCause {
    let (mut session, outbox) = app.engine.open_session(identity);
    // Queued before the pump starts, so `subscribed` is the first frame the client reads.
    session
        .handle(Request {
            id: None,
            frame: ClientFrame::Subscribe { room, since_seq },
        })
        .await;
    let (sink, stream) = socket.split();
    let mut reader = Reader(stream);
    let mut writer = Writer(sink);
    let c = app.ws.config();
    let config = PumpConfig {
        probe_interval: c.ping_interval,
        idle_timeout: c.ping_interval + c.pong_timeout,
        write_timeout: c.write_timeout,
        max_batch: c.max_batch_frames.max(1),
        drain_timeout: c.shutdown_timeout,
    };
    let end = pump(
        session,
        outbox,
        &mut reader,
        &mut writer,
        codec,
        &config,
        &app.shutdown,
    )
    .await;
    let cause = close_cause(&end);
    if let Ok(socket) = reader.0.reunite(writer.0) {
        goodbye(socket, cause, c.close_timeout).await;
    }
    cause
}

/// transport-ws's mapping from how a pump ended to a close code.
fn close_cause(end: &PumpEnd<axum::Error>) -> CloseCause {
    use std::error::Error as _;
    use transport_ws::tokio_tungstenite::tungstenite::Error as WsError;
    match end {
        PumpEnd::Closed(CloseReason::Shutdown) => CloseCause::Shutdown,
        PumpEnd::Closed(CloseReason::SlowConsumer) => CloseCause::SlowConsumer,
        PumpEnd::Closed(CloseReason::Revoked) => CloseCause::Revoked,
        PumpEnd::Closed(_) => CloseCause::PolicyViolation,
        PumpEnd::PeerClosed => CloseCause::PeerClosed,
        PumpEnd::IdleTimeout => CloseCause::IdleTimeout,
        PumpEnd::WriteError(_) => CloseCause::Io,
        PumpEnd::ReadError(e) => match e.source().and_then(|s| s.downcast_ref::<WsError>()) {
            Some(WsError::Capacity(_)) => CloseCause::MessageTooBig,
            Some(WsError::Utf8(_)) => CloseCause::InvalidUtf8,
            Some(WsError::Protocol(_) | WsError::AttackAttempt) => CloseCause::ProtocolError,
            _ => CloseCause::Io,
        },
    }
}

struct Reader(SplitStream<WebSocket>);

impl FrameReader for Reader {
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

struct Writer(SplitSink<WebSocket, Message>);

impl FrameWriter for Writer {
    type Error = axum::Error;

    async fn feed(&mut self, codec: Codec, bytes: Bytes) -> Result<(), axum::Error> {
        let msg = match codec {
            Codec::Json => Message::Text(Utf8Bytes::try_from(bytes).map_err(axum::Error::new)?),
            Codec::Postcard => Message::Binary(bytes),
        };
        self.0.feed(msg).await
    }

    async fn flush(&mut self) -> Result<(), axum::Error> {
        self.0.flush().await
    }

    async fn probe(&mut self) -> Result<(), axum::Error> {
        self.0.feed(Message::Ping(Bytes::new())).await
    }
}

/// Our close frame, then the peer's frames until its close, within `timeout`.
async fn goodbye(mut socket: WebSocket, cause: CloseCause, timeout: std::time::Duration) {
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
