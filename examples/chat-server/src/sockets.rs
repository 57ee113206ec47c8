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
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, OriginalUri, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chat_core::conn::{CodecChoice, ConnPermit, Refused};
use chat_core::protocol::ClientFrame;
use chat_core::{Identity, Request, RoomId, Seq};
use serde::Deserialize;
use std::net::SocketAddr;
use transport_ws::{Admission, CloseCause, Rejection, WsConfig};

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
        Err(r) => return handshake_refusal(&r),
    };
    let upgrade = configure(upgrade, app.ws.config(), admission.protocol);
    let server = app.ws.clone();
    let tracker = app.sockets.clone();
    upgrade.on_upgrade(move |socket| {
        // Boxed before the task's future captures it: a connection's task then holds a
        // pointer instead of the socket itself at every level (see `WsServer::run_axum`).
        let socket = Box::new(socket);
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
        Err(r) => return handshake_refusal(&r),
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
        let socket = Box::new(socket);
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
    ApiError::new(status, code, why.to_string())
        .retry_after(std::time::Duration::from_secs(5))
        .into_response()
}

/// transport-ws's refusal of a handshake (credentials, origin, codec) in this server's JSON
/// error shape, `{"error": {"code", "message"}}`, with the transport's status and headers
/// (`WWW-Authenticate`, `Retry-After`). Its codes become the API's where they mean the same:
/// `unauthorized` → `unauthenticated`, `bad_request` → `invalid_request`; the others
/// (`forbidden_origin`, `forbidden`, `unavailable`, …) are kept as they are.
fn handshake_refusal(r: &Rejection) -> Response {
    let status = StatusCode::from_u16(r.status())
        .ok()
        .filter(|s| s.is_client_error() || s.is_server_error())
        .unwrap_or(StatusCode::BAD_REQUEST);
    let code = match r.code() {
        "unauthorized" => "unauthenticated",
        "bad_request" => "invalid_request",
        other => other,
    };
    let mut response = ApiError::new(status, code, r.message()).into_response();
    transport_ws::axum::insert_rejection_headers(r, response.headers_mut());
    response
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

/// A session subscribed to `room` before the client's first frame: transport-ws queues the
/// `subscribe` ahead of everything else, so `subscribed` is the first frame the client reads.
async fn run_subscribed(
    app: &AppState,
    socket: Box<WebSocket>,
    identity: Identity,
    codec: CodecChoice,
    room: RoomId,
    since_seq: Option<Seq>,
) -> CloseCause {
    let admission = Admission {
        identity: Some(identity),
        codec,
        protocol: None,
    };
    let subscribe = Request {
        id: None,
        frame: ClientFrame::Subscribe { room, since_seq },
    };
    app.ws
        .run_axum_with(socket, admission, vec![subscribe])
        .await
}
