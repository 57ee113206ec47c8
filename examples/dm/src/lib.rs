//! Run with: cargo run -p dm
//!
//! Personal one-to-one chat over WebSocket, in plain text frames.
//!
//! `GET /ws?user_id=alice&recipient_id=bob` opens Alice's side of her conversation with Bob.
//! Each text frame she sends is a direct message to Bob, stored in their direct room; each
//! message of the conversation reaches her as one text frame `sender: text`. On connecting
//! she first gets the last [`HISTORY`] messages (both sides). A line is not echoed to the
//! connection that sent it (the terminal already shows it), but her other connections get it.
//!
//! **DEVELOPMENT ONLY:** `user_id` is taken at its word ([`TrustedAuthenticator`]): anyone
//! can be anyone. Authenticate for real (e.g. `Engine::accounts` tokens) before exposing it.

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use chat_core::protocol::{Entry, ServerFrame};
use chat_core::{ClientFrame, Engine, Error, Identity, Outbound, Outbox, Request, Seq, Session};
use chat_core::{CloseReason, TrustedAuthenticator, auth::random_code};
use serde::Deserialize;

/// How many past messages a connecting user gets first.
pub const HISTORY: u64 = 50;

#[derive(Clone)]
struct App {
    engine: Engine,
    /// DEVELOPMENT ONLY: trusts whatever name the client claims.
    auth: TrustedAuthenticator,
}

#[derive(Deserialize)]
struct Params {
    user_id: String,
    recipient_id: String,
}

/// The routes: the static page at `/` and the chat socket at `/ws`.
pub fn app(engine: Engine) -> Router {
    let auth = TrustedAuthenticator::new(engine.store().clone());
    Router::new()
        .route(
            "/",
            get(|| async { Html(include_str!("../assets/index.html")) }),
        )
        .route("/ws", get(ws))
        .with_state(App { engine, auth })
}

/// Serves [`app`] on `listener`.
pub async fn run(listener: tokio::net::TcpListener, engine: Engine) -> std::io::Result<()> {
    axum::serve(listener, app(engine)).await
}

async fn ws(
    State(app): State<App>,
    Query(p): Query<Params>,
    upgrade: WebSocketUpgrade,
) -> Response {
    match open(&app, &p).await {
        Ok((session, outbox)) => {
            let peer = p.recipient_id;
            upgrade.on_upgrade(move |socket| chat(socket, session, outbox, peer))
        }
        Err(e @ (Error::Storage { .. } | Error::Internal(_))) => {
            (StatusCode::INTERNAL_SERVER_ERROR, e.public_message()).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.public_message()).into_response(),
    }
}

/// Opens a session for `user_id`, subscribed to the direct room with `recipient_id`.
async fn open(app: &App, p: &Params) -> chat_core::Result<(Session, Outbox)> {
    // DEVELOPMENT ONLY: both users are created on first use, no password asked.
    let me = Identity::of(&app.auth.user(&p.user_id).await?);
    app.auth.user(&p.recipient_id).await?;
    let room = app.engine.direct_room(&me, &p.recipient_id).await?.id;
    let latest = app.engine.store().latest_seq(room).await?;
    let (mut session, outbox) = app.engine.open_session(me);
    // Subscribing before the upgrade: the recent history, then every new message, no gap.
    let since_seq = Some(Seq(latest.0.saturating_sub(HISTORY)));
    let frame = ClientFrame::Subscribe { room, since_seq };
    session.handle(Request { id: None, frame }).await;
    Ok((session, outbox))
}

async fn chat(mut socket: WebSocket, mut session: Session, mut outbox: Outbox, peer: String) {
    // This connection's messages carry ids starting with `tag`, so that it can skip its echo.
    let Ok(tag) = random_code(9) else { return };
    let mut sent = 0u64;
    loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    sent += 1;
                    let frame = ClientFrame::SendDirect {
                        to: peer.clone(),
                        body: text.trim_end_matches(['\r', '\n']).to_string(),
                        client_msg_id: Some(format!("{tag}-{sent}")),
                    };
                    session.handle(Request { id: None, frame }).await;
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {} // axum answers pings; binary frames are ignored
            },
            out = outbox.recv() => {
                let frame = match out {
                    Outbound::Frame(frame) => frame,
                    Outbound::Close(reason) => {
                        let code = match reason {
                            CloseReason::SlowConsumer => 1013, // try again later
                            CloseReason::PolicyViolation => 1008,
                            _ => 1001, // going away: shutdown, or the user was signed out
                        };
                        let reason = reason.as_str().into();
                        let close = Message::Close(Some(CloseFrame { code, reason }));
                        let _ = socket.send(close).await;
                        return;
                    }
                };
                for line in lines(&frame.response().frame, &tag) {
                    if socket.send(Message::Text(line.into())).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// What a frame shows on this connection: history and others' messages as `sender: text`.
fn lines(frame: &ServerFrame, tag: &str) -> Vec<String> {
    let show = |e: &Entry| format!("{}: {}", e.sender_name, e.body);
    match frame {
        ServerFrame::Subscribed { entries, .. } => entries.iter().map(show).collect(),
        ServerFrame::Message(e) if !e.client_msg_id.as_deref().unwrap_or("").starts_with(tag) => {
            vec![show(e)]
        }
        ServerFrame::Error { message, .. } => vec![format!("error: {message}")],
        _ => Vec::new(), // acks, presence, room events: nothing to show in a plain-text chat
    }
}
