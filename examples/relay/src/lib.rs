//! Run with: cargo run -p relay
//!
//! A topic relay on the engine: a topic is a public room (created on first use), a registration
//! a login token of the user, a client's WebSocket an engine session opened with that token and
//! subscribed to its topics' rooms. A publish for everyone is a system message in the room; for
//! one user, a notice (`Engine::notify_user`). The control API trusts its caller.

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Json, Path, State};
use axum::http::{HeaderMap, StatusCode, header::HOST};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use chat_core::protocol::ServerFrame;
use chat_core::{Author, ClientFrame, Engine, Error, Outbound, Outbox, Request};
use chat_core::{RoomId, RoomKind, Session, TrustedAuthenticator};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeSet;

type Reply = Result<Response, Response>;
/// A connected client: its engine session and the rooms of its topics.
type Client = (Session, BTreeSet<RoomId>);

/// Serves the relay on `listener`, with CORS open to any origin.
pub async fn run(listener: tokio::net::TcpListener, engine: Engine) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/health", get(|| async { StatusCode::OK }))
        .route("/register", post(register))
        .route("/register/{id}", delete(unregister))
        .route("/ws/{id}", get(ws))
        .route("/publish", post(publish))
        .layer(tower_http::cors::CorsLayer::permissive())
        .with_state(engine);
    axum::serve(listener, app).await
}

/// An engine error as a response: `{"error": code, "message": text}`.
fn fail(e: Error) -> Response {
    let status = match e {
        Error::Storage { .. } | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    let body = json!({ "error": e.code(), "message": e.public_message() });
    (status, Json(body)).into_response()
}

#[derive(Deserialize)]
struct Register {
    user_id: u64,
}
async fn register(State(engine): State<Engine>, h: HeaderMap, Json(r): Json<Register>) -> Reply {
    // The engine user `user-<n>`, created on first use: the caller is trusted.
    let users = TrustedAuthenticator::new(engine.store().clone());
    let user = users.user(&format!("user-{}", r.user_id)).await;
    let user = user.map_err(fail)?;
    // The registration id is a fresh login token: 256 random bits, only its hash is stored.
    let token = engine.accounts().issue_token(user.id).await.map_err(fail)?;
    let host = h.get(HOST).and_then(|v| v.to_str().ok());
    let (host, id) = (host.unwrap_or("127.0.0.1:8000"), token.as_str());
    Ok(Json(json!({ "url": format!("ws://{host}/ws/{id}") })).into_response())
}

async fn unregister(State(engine): State<Engine>, Path(id): Path<String>) -> Reply {
    // Revoking the token also closes every socket opened with it.
    match engine.logout(&id).await.map_err(fail)? {
        true => Ok(StatusCode::OK.into_response()),
        false => Ok(StatusCode::NOT_FOUND.into_response()),
    }
}

#[derive(Deserialize)]
struct Publish {
    topic: String,
    user_id: Option<u64>,
    message: String,
}
async fn publish(State(engine): State<Engine>, Json(p): Json<Publish>) -> Reply {
    chat_core::validate::body(&p.message, engine.limits()).map_err(fail)?;
    let room = match engine.public_room_by_name(&p.topic).await {
        Err(Error::RoomNameNotFound(_)) => return Ok(StatusCode::OK.into_response()), // unheard
        found => found.map_err(fail)?.id,
    };
    if let Some(n) = p.user_id {
        let user = engine.store().credentials(&format!("user-{n}")).await;
        if let Some(c) = user.map_err(fail)? {
            engine.notify_user(c.user.id, Some(room), p.message).await;
        }
    } else {
        let message = engine.publish(Author::System, room, p.message, None);
        message.await.map_err(fail)?;
    }
    Ok(StatusCode::OK.into_response())
}

async fn ws(State(engine): State<Engine>, Path(id): Path<String>, up: WebSocketUpgrade) -> Reply {
    let (accounts, unknown) = (engine.accounts(), |_| StatusCode::NOT_FOUND.into_response());
    let (session, outbox) = engine.open_session(accounts.verify_token(&id).await.map_err(unknown)?);
    // Checked again now that the session is open: a `DELETE` from now on closes it.
    accounts.verify_token(&id).await.map_err(unknown)?;
    let mut client = (session, BTreeSet::new());
    // Subscribed before the upgrade: once connected, the client receives `cats`.
    let cats = set_topics(&mut client, &["cats".into()]).await;
    cats.map_err(fail)?;
    let up = up.max_message_size(64 * 1024);
    Ok(up.on_upgrade(move |socket| relay(socket, client, outbox)))
}

#[derive(Deserialize)]
struct Topics {
    topics: Vec<String>,
}
/// Moves frames until the client leaves or is unregistered, then closes the socket.
async fn relay(mut socket: WebSocket, mut c: Client, mut out: Outbox) {
    let why = loop {
        let text = tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(t))) if t.trim() == "ping" => continue,
                Some(Ok(Message::Text(t))) => match serde_json::from_str::<Topics>(&t) {
                    Ok(Topics { topics }) => match set_topics(&mut c, &topics).await {
                        Ok(()) => json!({ "topics": topics }),
                        Err(e) => json!({ "error": e.public_message() }),
                    },
                    Err(_) => json!({ "error": r#"send {"topics": ["cats", ...]} or ping"# }),
                }
                .to_string(),
                Some(Ok(Message::Close(_)) | Err(_)) | None => break "bye",
                Some(Ok(_)) => continue, // pings are answered by axum; binary frames ignored
            },
            frame = out.recv() => match frame {
                Outbound::Close(reason) => break reason.as_str(), // `revoked`: unregistered
                Outbound::Frame(f) => match &f.response().frame {
                    ServerFrame::Message(entry) => entry.body.clone(),
                    ServerFrame::Notice { body, .. } => body.clone(),
                    ServerFrame::Error { message, .. } => json!({ "error": message }).to_string(),
                    _ => continue, // subscription replies, presence: not for relay clients
                },
            },
        };
        if socket.send(Message::Text(text.into())).await.is_err() {
            return;
        }
    };
    let reason = why.into();
    let close = Message::Close(Some(CloseFrame { code: 1000, reason }));
    let _ = socket.send(close).await;
}

/// Subscribes to exactly these topics (at most 16), creating their rooms on first use.
async fn set_topics((session, rooms): &mut Client, topics: &[String]) -> Result<(), Error> {
    if topics.len() > 16 {
        return Err(Error::LimitReached("16 topics per client"));
    }
    let (engine, mut wanted) = (session.engine().clone(), BTreeSet::new());
    for name in topics {
        // Get or create: the store's unique public room names settle any race.
        let room = match engine.create_system_room(name, RoomKind::Public).await {
            Err(Error::AlreadyExists(_)) => engine.public_room_by_name(name).await?.id,
            created => created?.id,
        };
        wanted.insert(room);
    }
    for &room in rooms.difference(&wanted) {
        let frame = ClientFrame::Unsubscribe { room };
        session.handle(Request { id: None, frame }).await;
    }
    let since_seq = None; // only what is published from now on
    for &room in wanted.difference(rooms) {
        let frame = ClientFrame::Subscribe { room, since_seq };
        session.handle(Request { id: None, frame }).await;
    }
    *rooms = wanted;
    Ok(())
}
